"""The robustness application's error messages (``localnorm robustness``, ``studies``,
``bench``): options, backends and devices, data files, results and checkpoints. They
follow the template of :mod:`localnorm._errors` (what is wrong, expected,
``Received:``, how to fix it) and raise :class:`~localnorm.LocalNormError`, which the CLI
turns into one line on stderr."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# LocalNormError (what the CLI catches) and the core's rank message (``corrupt`` takes
# the same (N, C, H, W) images as the layers) are used here under the application's name.
from localnorm._errors import LocalNormError, bad_rank, listing  # noqa: F401


def backend_not_installed(backend: str, module: str, extra: str) -> LocalNormError:
    return LocalNormError(
        f"--backend {backend} trains and evaluates the networks with {module}, which is not "
        f"installed. Received: backend={backend!r}. Fix: pip install \"localnorm[{extra},"
        "experiments]\", or choose an installed backend (--backend torch, keras or flax)."
    )


def device_unavailable(device: str, backend: str, available: Iterable[str]) -> LocalNormError:
    return LocalNormError(
        f"--backend {backend} has no device {device!r} here. Expected one of "
        f"{listing(available)}. Received: device={device!r}. Fix: pass --device auto (the "
        f"framework's default device) or one of those; for a GPU, install the CUDA build of "
        f"{backend}."
    )


def adapter_missing(method: str, backend: str, module: str) -> LocalNormError:
    return LocalNormError(
        f"Method {method!r} needs the LocalNorm layers of {module}, which this installation "
        f"does not provide. Received: method={method!r}, backend={backend!r}. Fix: install "
        f"localnorm with the [{backend}] extra, or leave {method!r} out of --methods."
    )


def model_not_in_backend(model: str, backend: str, available: Iterable[str]) -> LocalNormError:
    return LocalNormError(
        f"The {backend} backend of the robustness experiment does not build --model {model}. "
        f"Expected one of {listing(available)}. Received: model={model!r}, "
        f"backend={backend!r}. Fix: pass --backend torch for {model}, or choose one of "
        "those models."
    )


def image_too_small(model: str, shape: tuple, minimum: int) -> LocalNormError:
    return LocalNormError(
        f"--model {model} halves the image size five times (a 2x2 max-pool after each of "
        f"its five stages), so it needs images of at least {minimum}x{minimum} pixels. "
        f"Received: model={model!r}, image shape (C, H, W)={tuple(shape)}. Fix: use "
        "--model resnet or mnistnet for smaller images, or --dataset folder --image-size 32."
    )


def dataset_files_missing(dataset: str, data_dir: Any, expected: str) -> LocalNormError:
    return LocalNormError(
        f"Could not find the files of dataset {dataset!r}; nothing is ever downloaded. "
        f"Expected {expected}. Received: dataset={dataset!r}, "
        f"data_dir={None if data_dir is None else str(data_dir)!r}. "
        "Fix: pass --data-dir pointing at a folder with those files, or use "
        "--dataset digits (embedded in scikit-learn, needs no files)."
    )


def test_dir_missing(test_dir: Any) -> LocalNormError:
    return LocalNormError(
        f"--test-dir names no folder: {str(test_dir)!r} does not exist. Expected a folder "
        f"of class folders of JPEG files (test/<class>/*.jpg). Received: "
        f"test_dir={str(test_dir)!r}. Fix: pass the folder that holds the test split's "
        "class folders, or leave --test-dir out to use test/ beside train/ in --data-dir "
        "(or, without one, the seeded stratified split of train/)."
    )


def bad_dataset_file(path: Any, problem: str, expected: str) -> LocalNormError:
    return LocalNormError(
        f"Cannot read {str(path)!r}: {problem}. Expected {expected}. "
        f"Received: path={str(path)!r}. Fix: replace the file with an intact copy "
        "(re-extract or re-copy it), or remove it from --data-dir."
    )


def bad_corruption_severity(name: str, severity: Any) -> LocalNormError:
    return LocalNormError(
        f"Corruption {name!r} has severities 1 to 5 (the ImageNet-C/CIFAR-10-C scale). "
        f"Received: severity={severity!r}. Fix: pass an int in [1, 5] (--levels {name}=1,2,3)."
    )


def bad_levels(spec: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"Cannot parse --levels: {problem}. Expected numbers applied to every selected noise "
        f"(e.g. `--levels 0.5 1 2`) or per-noise lists (e.g. `--levels agn=0.5,1,2 "
        f"gaussian_noise=1,3,5`). Received: levels={spec!r}. Fix: use one of those forms."
    )


def bad_confusion(spec: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"--confusion names the noise cell of the confusion-matrix figure, which must be "
        f"evaluated in this run: {problem}. Received: confusion={spec!r}. Fix: pass "
        "NOISE=LEVEL with a NOISE of --noises and a LEVEL of its --levels (e.g. "
        "--confusion agn=1), or --confusion none for no figure."
    )


def bad_option(option: str, value: Any, expected: str, fix: str) -> LocalNormError:
    return LocalNormError(
        f"{option} is not valid: it must be {expected}. Received: {option}={value!r}. "
        f"Fix: {fix}."
    )


def out_not_writable(path: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"--out {str(path)!r} cannot hold the results: {problem}. It was checked before any "
        "training, so nothing was lost. Expected a folder this user can create and write. "
        f"Received: out={str(path)!r}. Fix: pass --out naming a new or writable folder "
        "(not an existing file)."
    )


def bad_results_file(path: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"--resume cannot read the earlier results {str(path)!r}: {problem}. Expected the "
        "results.json written by `localnorm robustness` (it is written atomically, so this "
        f"file was changed by something else). Received: path={str(path)!r}. Fix: restore "
        "the file, or move it away and run again (without --resume every cell is "
        "recomputed), or write to another --out."
    )


def bad_checkpoint(path: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"--resume cannot load the trained network {str(path)!r}: {problem}. Expected a "
        "checkpoint written by `localnorm robustness` for the same settings (checkpoints "
        f"are written atomically, so this file was damaged afterwards). Received: "
        f"path={str(path)!r}. Fix: delete this checkpoint (the network is then retrained "
        "from the same seed) and run again with --resume."
    )


def resume_mismatch(path: Any, key: str, saved: Any, requested: Any) -> LocalNormError:
    return LocalNormError(
        f"--resume found results in {str(path)!r} from a run with other settings, so its cells "
        f"are not comparable. Received: {key}={requested!r} (the saved run used "
        f"{key}={saved!r}). Fix: resume with the same settings, or write to another --out "
        "(or drop --resume to overwrite)."
    )


def too_few_for_groups(what: str, count: int, needed: int, num_groups: int) -> LocalNormError:
    return LocalNormError(
        f"The {what} holds {count} images but LocalNorm with {num_groups} groups along the "
        f"batch axis needs at least {needed}. Received: {what}={count}, "
        f"num_groups={num_groups}. Fix: use more images (--limit-train/--limit-test), a "
        "larger --batch-size, or fewer --groups."
    )


def bad_group_list(groups: Any, batch_size: int, problem: str) -> LocalNormError:
    return LocalNormError(
        f"The groups ablation trains one network per K (groups along the batch axis, each "
        f"of batch_size // K images), but {problem}. Expected distinct integers K >= 1 "
        f"that divide the training batch {batch_size} into groups of at least 2 images. "
        f"Received: groups={groups}, batch_size={batch_size}. Fix: drop those K, or pass "
        "a --batch-size that is a multiple of twice the largest K."
    )


def seed_runs_differ(key: str, values: list) -> LocalNormError:
    return LocalNormError(
        f"summarize-seeds averages runs that differ only in --seed, but the runs given differ "
        f"in {key}, so their spread would not be the spread over seeds. Received: "
        f"{key}={values} (one per run, in order). Fix: pass only the run folders made with "
        "the same settings apart from --seed."
    )


def bench_suite_missing(path: str) -> LocalNormError:
    return LocalNormError(
        "`localnorm bench` runs the benchmark suite of a source checkout, which is not part "
        f"of the installed package. Received: no benchmarks suite at {path}. Fix: clone the "
        "localnorm repository and install it editable (`pip install -e .`), then run "
        "`localnorm bench` again."
    )
