"""localnorm's benchmark suite: LocalNorm against each framework's native BatchNorm.

Run it with ``localnorm bench`` (see :mod:`localnorm.experiments.bench`), which runs every
section in its own process (``python -m localnorm.benchmarks SECTION``) and writes ``bench.json``
and ``bench.md``. Modules: :mod:`benchmarks._timing` (interleaved repetitions, medians,
paired ratios), :mod:`benchmarks._report` (records, JSON layout, the markdown page),
:mod:`benchmarks._cases` (shapes and networks), and one module per framework
(:mod:`benchmarks.torch_bench`, :mod:`benchmarks.keras_bench`, :mod:`benchmarks.flax_bench`).
"""
