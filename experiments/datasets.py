"""Local image datasets for the robustness experiment; nothing is ever downloaded.

Every loader returns a :class:`ImageData`: float32 images of shape (N, C, H, W) scaled to
[0, 1] (the range the paper's noise models assume), int64 labels, class names, and a
one-line ``note`` saying where the data came from and how it was split.

=================  ======================================================================
``digits``         scikit-learn's embedded 8x8 digits (1797 images, 16 grey levels); a
                   seeded stratified 75/25 split. The default: needs no files.
``mnist``,         ``--data-dir`` holding the standard IDX files
``fashion-mnist``, (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``kmnist``         ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), or an
                   ``.npz`` with ``x_train, y_train, x_test, y_test`` (Keras' ``mnist.npz``),
                   or KMNIST's ``kmnist-{train,test}-{imgs,labels}.npz``. Where only the
                   10k test split is present, it is split (seeded, stratified) into 80%
                   train and 20% test, and the note says so.
``cifar10``        the python pickle batches ``data_batch_1..5`` and ``test_batch`` in
                   ``--data-dir`` or its ``cifar-10-batches-py`` sub-folder; or, without
                   them, a JPEG folder ``train/<class>/*.jpg`` (the project's
                   ``cifar10-train-jpeg.tar.gz``, unpacked): with a ``test/<class>/``
                   folder beside ``train/`` (or ``--test-dir``), that is the test split;
                   without one, a seeded stratified 45,000/5,000 split of ``train/``
                   (:data:`CIFAR10_VAL_FRACTION`, :data:`CIFAR10_SPLIT_SEED`).
``folder``         one sub-folder of images per class: ``root/train/<class>/*`` and
                   ``root/test/<class>/*``, or ``root/<class>/*`` (then a seeded stratified
                   80/20 split). Images are resized to ``image_size`` and kept grey when all
                   of them are grey.
=================  ======================================================================
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

from . import _errors

__all__ = ["ImageData", "DATASETS", "CLASS_NAMES", "load", "stratified_split", "read_idx",
           "CIFAR10_VAL_FRACTION", "CIFAR10_SPLIT_SEED", "cifar10_jpeg_dir"]

#: Dataset names accepted by :func:`load` (and ``--dataset``).
DATASETS = ("digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "folder")

#: Class names of the MNIST-like datasets whose labels are not digits (Fashion-MNIST's
#: published names; KMNIST's ten hiragana, romanized: o, ki, su, tsu, na, ha, ma, ya, re, wo).
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclasses.dataclass
class ImageData:
    """Train and test images, (N, C, H, W) float32 in [0, 1], with int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    name: str
    note: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, train: int | None = None, test: int | None = None) -> ImageData:
        """The first ``train`` / ``test`` images (the splits are already shuffled)."""
        note = self.note
        if train is not None or test is not None:
            note += f" Limited to {train or len(self.y_train)} train / {test or len(self.y_test)} test images."
        return dataclasses.replace(
            self,
            x_train=self.x_train[:train], y_train=self.y_train[:train],
            x_test=self.x_test[:test], y_test=self.y_test[:test], note=note,
        )


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Seeded stratified split: (train_index, test_index), each shuffled.

    Every class contributes ``round(test_fraction * count)`` samples to the test side
    (at least one when it has two or more), so class proportions are kept.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _shuffled(x, y, seed):
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


def _to_nchw(images: np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32) / np.float32(scale)
    if x.ndim == 3:  # (N, H, W) grey
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


# -- IDX ---------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise _errors.bad_dataset_file(
                path, "the gzip stream ends early (a truncated download or copy)",
                "a complete .gz file") from None
        except (OSError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise _errors.bad_dataset_file(
                path, f"its gzip data is corrupt ({exc})", "an intact .gz file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise _errors.bad_dataset_file(
            path, f"it does not start with an IDX magic number (got {raw[:4].hex() or 'an empty file'})",
            "an IDX file such as train-images-idx3-ubyte(.gz)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise _errors.bad_dataset_file(
            path, f"its header announces {ndim} dimensions and ends after {len(raw)} bytes",
            "an IDX header with 1 to 4 dimension sizes")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise _errors.bad_dataset_file(
            path, f"its header announces shape {tuple(dims.tolist())} ({count * dtype.itemsize} bytes) "
            f"but {len(raw) - offset} bytes of data follow", "a complete IDX file")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(tuple(dims.tolist()))


def _checked_pair(images: np.ndarray, labels: np.ndarray, images_path, labels_path,
                  num_classes: int = 10, image_ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images and int64 labels of one split, after checking that they belong together:
    ``image_ndim``-D images (N, H, W[, C]) with a non-empty image, 1-D integer labels in
    [0, num_classes), and as many labels as images (never silently truncated)."""
    if images.ndim != image_ndim or images.shape[0] == 0 or 0 in images.shape[1:]:
        raise _errors.bad_dataset_file(
            images_path, f"it holds an array of shape {tuple(images.shape)}",
            f"{image_ndim}-D images (N, height, width{', channels' if image_ndim == 4 else ''})"
            " with N >= 1")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise _errors.bad_dataset_file(
            labels_path, f"it holds a {labels.dtype.name} array of shape {tuple(labels.shape)}",
            "1-D integer labels, one per image")
    if len(labels) != len(images):
        raise _errors.bad_dataset_file(
            labels_path, f"it holds {len(labels)} labels for the {len(images)} images of "
            f"{str(images_path)!r}", "one label per image (the files of one split, from the "
            "same release)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise _errors.bad_dataset_file(
            labels_path, f"its labels range from {labels.min()} to {labels.max()}",
            f"labels in [0, {num_classes - 1}]")
    return images, labels.astype(np.int64)


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    # Some mirrors use a dot instead of a dash (train-images.idx3-ubyte).
    for cand in sorted(data_dir.glob(stem.replace("-idx", "*idx") + "*")):
        if cand.is_file():
            return cand
    return None


def _load_mnist_like(name: str, data_dir: Path, seed: int) -> ImageData:
    parts = {}
    for split in ("train", "t10k"):
        kind = {"images": "idx3", "labels": "idx1"}
        found = {k: _find(data_dir, f"{split}-{k}-{v}-ubyte") for k, v in kind.items()}
        if all(found.values()):
            parts[split] = _checked_pair(read_idx(found["images"]), read_idx(found["labels"]),
                                         found["images"], found["labels"])
    if not parts:
        parts = _load_npz_splits(data_dir)
    if not parts:
        raise _errors.dataset_files_missing(
            name, data_dir,
            "t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz] (and optionally the "
            "train-* pair), or an .npz with x_train, y_train, x_test, y_test")
    classes = list(CLASS_NAMES.get(name, [str(c) for c in range(10)]))
    if "train" in parts and "t10k" in parts:
        (xtr, ytr), (xte, yte) = parts["train"], parts["t10k"]
        xtr, ytr = _shuffled(xtr, ytr, seed)
        xte, yte = _shuffled(xte, yte, seed + 1)
        note = f"{name}: standard split, {len(ytr)} train / {len(yte)} test images from {data_dir}."
    else:
        which = "t10k" if "t10k" in parts else "train"
        x, y = parts[which]
        tr, te = stratified_split(y, 0.2, seed)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        note = (f"{name}: only the {which} split ({len(y)} images) is in {data_dir}; it was split "
                f"with a seeded stratified 80/20 split (seed={seed}) into {len(ytr)} train / "
                f"{len(yte)} test images.")
    scale = 255.0 if np.issubdtype(xtr.dtype, np.integer) else 1.0
    return ImageData(_to_nchw(xtr, scale), ytr, _to_nchw(xte, scale), yte, classes, name, note)


def _load_npz_splits(data_dir: Path) -> dict:
    parts = {}
    km = {s: (data_dir / f"kmnist-{s}-imgs.npz", data_dir / f"kmnist-{s}-labels.npz")
          for s in ("train", "test")}
    for split, (imgs, labels) in km.items():
        if imgs.is_file() and labels.is_file():
            with _open_npz(imgs) as fi, _open_npz(labels) as fl:
                parts["t10k" if split == "test" else "train"] = _checked_pair(
                    fi[fi.files[0]], fl[fl.files[0]], imgs, labels)
    if parts:
        return parts
    for path in sorted(data_dir.glob("*.npz")):
        with _open_npz(path) as f:
            if {"x_test", "y_test"} <= set(f.files):
                parts["t10k"] = _checked_pair(f["x_test"], f["y_test"], f"{path}:x_test",
                                              f"{path}:y_test")
                if {"x_train", "y_train"} <= set(f.files):
                    parts["train"] = _checked_pair(f["x_train"], f["y_train"],
                                                   f"{path}:x_train", f"{path}:y_train")
                return parts
    return parts


def _open_npz(path: Path):
    """``np.load`` of an .npz, with a damaged file (not a zip, truncated, a pickled
    object) reported as :func:`~localnorm._errors.bad_dataset_file`."""
    import zipfile

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _errors.bad_dataset_file(path, f"it is not a readable .npz ({exc})"[:300],
                                       "a NumPy .npz archive") from None


# -- CIFAR-10 ----------------------------------------------------------------------------

def _load_cifar10(data_dir: Path, seed: int) -> ImageData:
    root = data_dir / "cifar-10-batches-py" if (data_dir / "cifar-10-batches-py").is_dir() else data_dir
    train_files = sorted(root.glob("data_batch_*"))
    test_file = root / "test_batch"
    if not train_files or not test_file.is_file():
        raise _errors.dataset_files_missing(
            "cifar10", data_dir, "data_batch_1 ... data_batch_5 and test_batch (the python "
            "pickle version), directly or in cifar-10-batches-py/")

    def read(path):
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, KeyError) as exc:
            raise _errors.bad_dataset_file(path, f"it is not a readable pickle ({exc!r})"[:300],
                                           "a CIFAR-10 python pickle batch") from None
        data = d.get(b"data", d.get("data")) if isinstance(d, dict) else None
        labels = d.get(b"labels", d.get("labels")) if isinstance(d, dict) else None
        if data is None or labels is None:
            raise _errors.bad_dataset_file(path, "it has no 'data'/'labels' entries",
                                           "a CIFAR-10 python pickle batch")
        data = np.asarray(data, np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise _errors.bad_dataset_file(path, f"its data has shape {data.shape}",
                                           "rows of 3072 bytes (3 x 32 x 32)")
        return _checked_pair(data.reshape(-1, 3, 32, 32), np.asarray(labels), path, path,
                             image_ndim=4)

    xs, ys = zip(*(read(p) for p in train_files))
    xtr, ytr = _shuffled(np.concatenate(xs), np.concatenate(ys), seed)
    xte, yte = _shuffled(*read(test_file), seed + 1)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = root / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            names = pickle.load(f, encoding="bytes").get(b"label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    note = f"cifar10: standard split, {len(ytr)} train / {len(yte)} test images from {root}."
    return ImageData(_to_nchw(xtr, 255.0), ytr, _to_nchw(xte, 255.0), yte, classes, "cifar10", note)


#: The JPEG CIFAR-10 folder without a test folder: the fraction of ``train/`` held out as
#: the validation split (stratified: 500 of each class's 5,000 images).
CIFAR10_VAL_FRACTION = 0.1

#: Seed of that split, fixed so that every training seed is measured on the same 5,000
#: validation images (the training seed still shuffles the training images).
CIFAR10_SPLIT_SEED = 0

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def _decode_rgb(files: list[Path]) -> np.ndarray:
    """(N, 32, 32, 3) uint8 from 32x32 image files, refusing any other size."""
    from PIL import Image

    out = np.empty((len(files), 32, 32, 3), np.uint8)
    for i, f in enumerate(files):  # decoding is per file; it runs once, before training
        with Image.open(f) as im:
            if im.size != (32, 32):
                raise _errors.bad_dataset_file(f, f"it is {im.size[0]}x{im.size[1]} pixels",
                                               "a 32x32 CIFAR-10 image")
            out[i] = np.asarray(im.convert("RGB"))
    return out


def _cifar10_files(root: Path) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for i, c in enumerate(CIFAR10_CLASSES):
        found = sorted(p for p in (root / c).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) \
            if (root / c).is_dir() else []
        files += found
        labels += [i] * len(found)
    return files, np.asarray(labels, np.int64)


def cifar10_jpeg_dir(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds the JPEG layout ``train/<class>/*.jpg`` of CIFAR-10."""
    return (Path(data_dir) / "train" / CIFAR10_CLASSES[0]).is_dir()


def _load_cifar10_jpeg(data_dir: Path, seed: int, test_dir: Path | None = None) -> ImageData:
    """CIFAR-10 as JPEG files: ``train/<class>/*``, and ``test/<class>/*`` beside it or
    ``test_dir``; without a test folder, the seeded stratified validation split."""
    files, labels = _cifar10_files(data_dir / "train")
    if len(files) == 0:
        raise _errors.dataset_files_missing(
            "cifar10", data_dir, "train/<class>/*.jpg with the ten class folders "
            f"({', '.join(CIFAR10_CLASSES)})")
    test_root = test_dir if test_dir is not None else data_dir / "test"
    if test_dir is not None and not Path(test_dir).is_dir():
        raise _errors.test_dir_missing(test_dir)
    where = "JPEG re-encoding of the CIFAR-10 training images, not the official pickles"
    if Path(test_root).is_dir():
        test_files, yte = _cifar10_files(Path(test_root))
        if len(test_files) == 0:
            raise _errors.dataset_files_missing("cifar10", test_root, "<class>/*.jpg")
        order = np.random.default_rng(seed).permutation(len(labels))
        te_order = np.random.default_rng(seed + 1).permutation(len(yte))
        xtr = _decode_rgb([files[i] for i in order])
        ytr = labels[order]
        xte = _decode_rgb([test_files[i] for i in te_order])
        yte = yte[te_order]
        note = (f"cifar10 ({where}): {len(ytr)} train images from {data_dir / 'train'}, "
                f"{len(yte)} test images from {test_root}.")
    else:
        tr, te = stratified_split(labels, CIFAR10_VAL_FRACTION, CIFAR10_SPLIT_SEED)
        tr = tr[np.random.default_rng(seed).permutation(len(tr))]
        xtr, ytr = _decode_rgb([files[i] for i in tr]), labels[tr]
        xte, yte = _decode_rgb([files[i] for i in te]), labels[te]
        note = (f"cifar10 ({where}): no test folder, so the {len(labels)} images of "
                f"{data_dir / 'train'} were split with a seeded stratified "
                f"{1 - CIFAR10_VAL_FRACTION:.0%}/{CIFAR10_VAL_FRACTION:.0%} split (split seed "
                f"{CIFAR10_SPLIT_SEED}, the same for every --seed) into {len(ytr)} train / "
                f"{len(yte)} validation images, reported as the test split.")
    return ImageData(_to_nchw(xtr, 255.0), ytr, _to_nchw(xte, 255.0), yte,
                     list(CIFAR10_CLASSES), "cifar10", note)


# -- image folder ------------------------------------------------------------------------

def _read_folder(root: Path, image_size: int, classes: list[str] | None = None):
    from PIL import Image

    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        found = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        files += found
        labels += [i] * len(found)
    from PIL import UnidentifiedImageError

    images = []
    for f in files:  # decoding is per file; this runs once, before any training
        # Images of any size and mode (grey, palette, RGBA, ...) become image_size x
        # image_size RGB; an image that cannot be decoded is an error naming its file.
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _errors.bad_dataset_file(f, f"it cannot be decoded as an image ({exc})"[:300],
                                           "an intact image file (PNG, JPEG, ...)") from None
    x = np.stack([np.asarray(im) for im in images]) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return x, np.asarray(labels, np.int64), classes


def _load_folder(data_dir: Path, seed: int, image_size: int) -> ImageData:
    if not data_dir.is_dir():
        raise _errors.dataset_files_missing("folder", data_dir, "one sub-folder of images per class")
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        xtr, ytr, classes = _read_folder(data_dir / "train", image_size)
        xte, yte, _ = _read_folder(data_dir / "test", image_size, classes)
        xtr, ytr = _shuffled(xtr, ytr, seed)
        xte, yte = _shuffled(xte, yte, seed + 1)
        note = f"folder: train/ and test/ of {data_dir}, {len(ytr)} train / {len(yte)} test images."
    else:
        x, y, classes = _read_folder(data_dir, image_size)
        if len(y) == 0:
            raise _errors.dataset_files_missing(
                "folder", data_dir, "one sub-folder of images per class (root/<class>/*.png), "
                "or root/train/<class>/ and root/test/<class>/")
        tr, te = stratified_split(y, 0.2, seed)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        note = (f"folder: {len(y)} images in {data_dir}, seeded stratified 80/20 split "
                f"(seed={seed}) into {len(ytr)} train / {len(yte)} test images.")
    if len(ytr) == 0 or len(yte) == 0:
        raise _errors.dataset_files_missing("folder", data_dir, "images for both train and test")
    grey = bool(np.all(xtr[..., 0] == xtr[..., 1]) and np.all(xtr[..., 1] == xtr[..., 2])
                and np.all(xte[..., 0] == xte[..., 1]) and np.all(xte[..., 1] == xte[..., 2]))
    if grey:
        xtr, xte = xtr[..., :1], xte[..., :1]
    note += f" Resized to {image_size}x{image_size}, {'grey' if grey else 'RGB'}."
    return ImageData(_to_nchw(xtr, 255.0), ytr, _to_nchw(xte, 255.0), yte, classes, "folder", note)


# -- digits ------------------------------------------------------------------------------

def _load_digits(seed: int) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    tr, te = stratified_split(d.target, 0.25, seed)
    x = d.images.astype(np.float32) / np.float32(16.0)
    y = d.target.astype(np.int64)
    note = (f"digits: scikit-learn's embedded 8x8 digits ({len(y)} images), seeded stratified "
            f"75/25 split (seed={seed}) into {len(tr)} train / {len(te)} test images.")
    return ImageData(x[tr][:, None], y[tr], x[te][:, None], y[te],
                     [str(c) for c in range(10)], "digits", note)


def load(name: str, data_dir: str | Path | None = None, *, seed: int = 0,
         image_size: int = 32, test_dir: str | Path | None = None) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    Parameters
    ----------
    name : str
        ``"digits"`` needs no files; the others read ``data_dir``.
    data_dir : path, optional
        Folder holding the files (see the module docstring for the accepted layouts).
    seed : int
        Seeds the shuffles and any stratified split.
    image_size : int
        ``"folder"`` only: images are resized to ``image_size x image_size``.
    test_dir : path, optional
        ``"cifar10"`` as JPEG files only: the test folder (``<class>/*.jpg``), instead of
        ``test/`` beside ``train/`` or the seeded validation split.
    """
    from localnorm import _spec

    _spec.check_choice("dataset", name, DATASETS)
    if name == "digits":
        return _load_digits(seed)
    if data_dir is None:
        raise _errors.dataset_files_missing(name, None, "a --data-dir holding the dataset files")
    path = Path(data_dir).expanduser()
    if name == "cifar10":
        if test_dir is not None or (cifar10_jpeg_dir(path) and not any(
                (path / d).exists() for d in ("data_batch_1", "cifar-10-batches-py"))):
            test = None if test_dir is None else Path(test_dir).expanduser()
            return _load_cifar10_jpeg(path, seed, test)
        return _load_cifar10(path, seed)
    if name == "folder":
        return _load_folder(path, seed, image_size)
    return _load_mnist_like(name, path, seed)
