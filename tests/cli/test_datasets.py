"""Dataset loaders, on small files written by the tests in each standard format."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from localnorm import LocalNormError
from localnorm.experiments import datasets


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _images(n, rng, h=6, w=6):
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)


def _write_idx(folder, split, x, y, gz):
    for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
        data = _idx_bytes(arr)
        name = f"{split}-{kind}-ubyte"
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    x = _images(7, rng)
    _write_idx(tmp_path, "t10k", x, np.arange(7) % 3, gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / name), x)


def test_idx_truncated_and_garbage(tmp_path):
    rng = np.random.default_rng(0)
    good = _idx_bytes(_images(3, rng))
    (tmp_path / "cut").write_bytes(good[:-5])
    with pytest.raises(LocalNormError, match="cut") as info:
        datasets.read_idx(tmp_path / "cut")
    assert "(3, 6, 6)" in str(info.value)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(LocalNormError, match="IDX"):
        datasets.read_idx(tmp_path / "junk")


def test_mnist_full_split(tmp_path):
    rng = np.random.default_rng(1)
    xtr, ytr = _images(30, rng), rng.integers(0, 10, 30)
    xte, yte = _images(12, rng), rng.integers(0, 10, 12)
    _write_idx(tmp_path, "train", xtr, ytr, gz=True)
    _write_idx(tmp_path, "t10k", xte, yte, gz=False)
    d = datasets.load("fashion-mnist", tmp_path, seed=3)
    assert d.x_train.shape == (30, 1, 6, 6) and d.x_test.shape == (12, 1, 6, 6)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    # Shuffled, but the same images and labels (pairs kept together).
    order = np.lexsort((ytr, xtr.reshape(30, -1).sum(1)))
    got = np.lexsort((d.y_train, np.rint(d.x_train * 255).reshape(30, -1).sum(1)))
    np.testing.assert_array_equal(d.y_train[got], ytr[order])
    assert "standard split" in d.note


def test_test_split_only_is_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(10), 20)  # 200 images, 20 per class
    x = _images(200, rng)
    _write_idx(tmp_path, "t10k", x, y, gz=True)
    a = datasets.load("mnist", tmp_path, seed=5)
    b = datasets.load("mnist", tmp_path, seed=5)
    c = datasets.load("mnist", tmp_path, seed=6)
    assert len(a.y_train) == 160 and len(a.y_test) == 40
    np.testing.assert_array_equal(np.bincount(a.y_test), np.full(10, 4))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    # Train and test are disjoint and together the whole file.
    tr = {bytes(np.rint(v * 255).astype(np.uint8)) for v in a.x_train}
    te = {bytes(np.rint(v * 255).astype(np.uint8)) for v in a.x_test}
    assert not tr & te and len(tr | te) == len({bytes(v) for v in x})
    assert "stratified" in a.note and "seed=5" in a.note and "160 train / 40 test" in a.note


def test_keras_npz_and_kmnist_npz(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "mnist.npz", x_train=_images(20, rng), y_train=np.arange(20) % 10,
             x_test=_images(10, rng), y_test=np.arange(10))
    d = datasets.load("mnist", tmp_path)
    assert d.x_train.shape == (20, 1, 6, 6) and d.x_test.shape == (10, 1, 6, 6)
    km = tmp_path / "km"
    km.mkdir()
    for split, n in (("train", 20), ("test", 10)):
        np.savez_compressed(km / f"kmnist-{split}-imgs.npz", arr_0=_images(n, rng))
        np.savez_compressed(km / f"kmnist-{split}-labels.npz", arr_0=np.arange(n) % 10)
    k = datasets.load("kmnist", km)
    assert len(k.y_train) == 20 and len(k.y_test) == 10
    assert k.classes[0] == "o" and k.classes[9] == "wo" and d.classes == [str(c) for c in range(10)]
    f = datasets.load("fashion-mnist", tmp_path)
    assert f.classes[0] == "T-shirt/top" and f.classes[9] == "Ankle boot" and len(f.classes) == 10


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    raw = {}
    for name, n in (("data_batch_1", 8), ("data_batch_2", 6), ("test_batch", 5)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        raw[name] = data
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    d = datasets.load("cifar10", tmp_path)
    assert d.x_train.shape == (14, 3, 32, 32) and d.x_test.shape == (5, 3, 32, 32)
    assert d.num_classes == 10
    # Channel-major rows: the first 1024 bytes are the red plane.
    first = raw["test_batch"].reshape(5, 3, 32, 32).astype(np.float32) / 255
    assert any(np.array_equal(first[0], img) for img in d.x_test)


def test_image_folder_split_and_grey(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = datasets.load("folder", tmp_path, image_size=8)
    assert d.classes == ["cat", "dog"]
    assert d.x_train.shape == (8, 1, 8, 8) and d.x_test.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(np.bincount(d.y_test), [1, 1])
    assert "grey" in d.note


def test_image_folder_train_test_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(6)
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b", "c"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.jpg")
    d = datasets.load("folder", tmp_path, image_size=16)
    assert d.x_train.shape == (9, 3, 16, 16) and d.x_test.shape == (6, 3, 16, 16)
    assert "RGB" in d.note


def test_digits_default():
    d = datasets.load("digits", seed=0)
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.max() == 1.0
    counts = np.bincount(d.y_test)
    assert counts.min() >= 43 and counts.max() <= 47  # stratified 25%


def test_missing_files_name_dir_and_remedy(tmp_path):
    with pytest.raises(LocalNormError) as info:
        datasets.load("mnist", tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "t10k-images-idx3-ubyte" in msg and "--data-dir" in msg
    with pytest.raises(LocalNormError, match="cifar10"):
        datasets.load("cifar10", tmp_path)
    with pytest.raises(LocalNormError, match="data_dir=None"):
        datasets.load("kmnist", None)
    with pytest.raises(LocalNormError, match="imagenet"):
        datasets.load("imagenet", tmp_path)


def test_stratified_split_properties():
    y = np.repeat(np.arange(3), [10, 5, 2])
    tr, te = datasets.stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(17))
    np.testing.assert_array_equal(np.bincount(y[te]), [2, 1, 1])
