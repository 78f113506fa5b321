"""Run one benchmark section in this process: ``python -m localnorm.benchmarks SECTION --out FILE``.

``localnorm bench`` starts one such process per section, so that Keras can fix its backend
per process and frameworks do not share thread pools or allocators. The section's JSON
(see :mod:`benchmarks._report`) is written to ``--out``. A section whose framework is not
installed is written with status "skipped"; an exception gives status "error" with the
traceback's last line as reason, and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from ._cases import KINDS, Context, section

#: Section name -> (module, framework, keras backend or None).
SECTIONS = {
    "torch": (".torch_bench", "torch", None),
    "keras-tensorflow": (".keras_bench", "keras", "tensorflow"),
    "keras-jax": (".keras_bench", "keras", "jax"),
    "keras-torch": (".keras_bench", "keras", "torch"),
    "flax": (".flax_bench", "flax", None),
}

#: What a user installs for each section (the [keras] extra is Keras alone).
_INSTALL = {"torch": 'pip install "localnorm[torch]"',
            "keras-tensorflow": 'pip install "localnorm[keras]" tensorflow',
            "keras-jax": 'pip install "localnorm[keras,flax]"',
            "keras-torch": 'pip install "localnorm[keras,torch]"',
            "flax": 'pip install "localnorm[flax]"'}

#: The module each section needs installed.
_NEEDS = {"torch": "torch", "keras": "keras", "flax": "flax"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__package__}")
    p.add_argument("section", choices=sorted(SECTIONS))
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--kinds", default=",".join(KINDS))
    args = p.parse_args(argv)
    module, framework, backend = SECTIONS[args.section]
    if backend is not None:
        os.environ["KERAS_BACKEND"] = backend
    from . import _report

    _report.stream_to(args.out)
    ctx = Context.make(args.quick, args.device, tuple(args.kinds.split(",")))
    status = 0
    try:
        importlib.import_module(_NEEDS[framework])
        if backend is not None:
            importlib.import_module(backend if backend != "tensorflow" else "tensorflow")
    except ImportError as exc:
        sec = section(args.section, framework, backend=backend, device=args.device)
        sec.update(status="skipped", reason=f"not installed: {exc}; install it with "
                   f"{_INSTALL[args.section]}")
    else:
        try:
            mod = importlib.import_module(module, __package__)
            sec = mod.run(ctx, backend) if backend is not None else mod.run(ctx)
        except Exception as exc:  # reported in bench.json, not hidden
            traceback.print_exc()
            sec = section(args.section, framework, backend=backend, device=args.device)
            sec.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            status = 1
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(sec, f)
    return status


if __name__ == "__main__":
    sys.exit(main())
