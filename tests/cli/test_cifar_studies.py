"""CIFAR-10 from JPEG files, the VGG-19 networks, confidence as an uncertainty signal, the
groups ablation and the seed summary (issue 17), on tiny generated data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from localnorm import LocalNormError
from localnorm.experiments import datasets, uncertainty

CLASSES = datasets.CIFAR10_CLASSES


def _write_jpegs(root, per_class, size=32, seed=0):
    """root/<class>/NNNN.jpg for the ten CIFAR-10 classes; class c is brighter with c, so
    a network can learn it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(rng.normal(20 + 22 * c, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:04d}.jpg", quality=95)


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    _write_jpegs(root / "train", 20)
    return root


# -- loader ------------------------------------------------------------------------------

def test_jpeg_folder_without_test_split_is_a_seeded_stratified_split(jpeg_dir):
    d = datasets.load("cifar10", jpeg_dir, seed=0)
    assert d.x_train.shape == (180, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert np.bincount(d.y_test, minlength=10).tolist() == [2] * 10  # stratified, 10%
    assert d.classes == list(CLASSES)
    assert "JPEG" in d.note and "not the official pickles" in d.note
    # The validation images do not depend on the training seed; the training order does.
    d1 = datasets.load("cifar10", jpeg_dir, seed=1)
    assert np.array_equal(d.x_test, d1.x_test) and np.array_equal(d.y_test, d1.y_test)
    assert not np.array_equal(d.y_train, d1.y_train)
    assert sorted(d.y_train.tolist()) == sorted(d1.y_train.tolist())
    # Labels follow the class folders (class c is brighter with c).
    means = [d.x_train[d.y_train == c].mean() for c in range(10)]
    assert means == sorted(means)


def test_a_test_folder_beside_train_or_given_is_the_test_split(jpeg_dir, tmp_path):
    root = tmp_path / "data"
    (root).mkdir()
    (root / "train").symlink_to(jpeg_dir / "train")
    _write_jpegs(root / "test", 3, seed=5)
    d = datasets.load("cifar10", root)
    assert len(d.y_train) == 200 and len(d.y_test) == 30
    assert "test images from" in d.note
    d2 = datasets.load("cifar10", jpeg_dir, test_dir=root / "test")
    assert len(d2.y_train) == 200 and np.array_equal(np.sort(d2.y_test), np.sort(d.y_test))


def test_loader_errors_name_the_problem(tmp_path, jpeg_dir):
    _write_jpegs(tmp_path / "big" / "train", 1, size=40)
    with pytest.raises(LocalNormError, match="40x40") as e:
        datasets.load("cifar10", tmp_path / "big")
    assert "Received" in str(e.value)
    with pytest.raises(LocalNormError, match="--test-dir names no folder") as e:
        datasets.load("cifar10", jpeg_dir, test_dir=tmp_path / "absent")
    assert f"test_dir={str(tmp_path / 'absent')!r}" in str(e.value)


# -- networks ------------------------------------------------------------------------------

def test_vgg19_has_sixteen_convolutions_each_followed_by_the_normalization():
    torch = pytest.importorskip("torch")
    from localnorm.experiments.torch_runner import build_model
    from localnorm.torch import LocalNorm2d

    for model, widths in (("vgg19", (64, 128, 256, 512)), ("vgg19-narrow", (16, 32, 64, 128))):
        net = build_model(model, "localnorm", (3, 32, 32), 10, 4)
        mods = list(net.modules())
        convs = [i for i, m in enumerate(mods) if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 16
        assert all(isinstance(mods[i + 1], LocalNorm2d) and mods[i + 1].num_groups == 4
                   for i in convs)
        assert sorted({mods[i].out_channels for i in convs}) == list(widths)
        assert net.eval()(torch.zeros(8, 3, 32, 32)).shape == (8, 10)
    with pytest.raises(LocalNormError, match="32x32"):
        build_model("vgg19", "batchnorm", (1, 8, 8), 10)


def test_vgg_on_a_backend_without_it_is_refused_before_any_work(tmp_path):
    from localnorm.experiments import _cli

    assert _cli.main(["robustness", "--model", "vgg19", "--backend", "keras",
                      "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


# -- uncertainty ------------------------------------------------------------------------------

def test_auroc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 5, 200) / 4  # many ties, like agreement
    correct = rng.random(200) < 0.3 + 0.5 * conf
    pos, neg = conf[correct], conf[~correct]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert uncertainty.auroc(conf, correct) == pytest.approx(brute)
    assert uncertainty.auroc([0.1, 0.2, 0.9], [False, False, True]) == 1.0
    assert uncertainty.auroc([0.9, 0.2, 0.1], [False, False, True]) == 0.0
    assert uncertainty.auroc(np.ones(10), np.arange(10) % 2 == 0) == 0.5
    assert uncertainty.auroc([0.3, 0.4], [True, True]) is None


def test_selective_accuracy_counts_ties_at_their_mean():
    conf = np.array([1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    correct = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    # 25%: the two most confident (both right); 50%: those plus 2 of 4 tied (mean 1/4 right).
    assert uncertainty.selective_accuracy(conf, correct, [0.25, 0.5, 1.0]) == pytest.approx(
        [1.0, (2 + 2 * 0.25) / 4, 4 / 8])
    # A constant signal keeps the plain accuracy at every coverage.
    flat = uncertainty.selective_accuracy(np.zeros(8), correct, [0.5, 0.8, 0.9])
    assert flat == pytest.approx([0.5] * 3)
    s = uncertainty.summarize(conf, correct, "agreement")
    assert s["signal"] == "agreement" and set(s["selective_accuracy"]) == {"0.5", "0.8", "0.9"}
    assert s["curve"][-1] == [1.0, 0.5]


# -- the main job on CIFAR-10 JPEGs ------------------------------------------------------------

def test_robustness_on_cifar10_jpegs_records_the_uncertainty(jpeg_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from localnorm.experiments import _cli

    out = tmp_path / "run"
    assert _cli.main(["robustness", "--dataset", "cifar10", "--data-dir", str(jpeg_dir),
                      "--model", "vgg19-narrow", "--quick", "--batch-size", "16",
                      "--noises", "agn", "--levels", "1", "--threads", "1", "--no-progress",
                      "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["model"] == "vgg19-narrow" and "JPEG" in res["data"]
    assert res["config"]["epochs"] == 2 and res["config"]["limit_test"] == 256  # --quick
    for r in res["records"]:
        u = r["uncertainty"]
        voting = r["protocol"] in ("voting", "single-voting")
        assert u["signal"] == ("agreement" if voting else "max_softmax")
        assert u["auroc"] is None or 0 <= u["auroc"] <= 1
        assert u["curve"][-1][1] == pytest.approx(r["accuracy"])
    md = (out / "results.md").read_text()
    assert "uncertainty signal" in md and "AUROC" in md
    assert (out / "risk_coverage.png").is_file() and (out / "uncertainty_agn.png").is_file()


# -- the groups ablation and the seed summary -------------------------------------------------

def test_ablate_groups_quick_writes_one_table_and_one_plot(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from localnorm.experiments import _cli

    out = tmp_path / "abl"
    assert _cli.main(["ablate-groups", "--quick", "--groups", "1", "4", "--levels", "1",
                      "--no-progress", "--out", str(out)]) == 0
    s = json.loads((out / "ablation.json").read_text())
    assert s["groups"] == [1, 4] and s["levels"] == [1.0]
    assert {(r["groups"], r["protocol"]) for r in s["rows"]} == {
        (k, p) for k in (1, 4) for p in ("batch", "single", "single-voting", "voting")}
    assert all(set(r["accuracy"]) == {"clean", "agn 1"} for r in s["rows"])
    for k in (1, 4):
        cfg = json.loads((out / f"k{k}" / "results.json").read_text())["config"]
        assert cfg["groups"] == k and cfg["limit_train"] == 512
    assert "| K |" in (out / "ablation.md").read_text() and (out / "ablation.png").is_file()


@pytest.mark.parametrize("groups, problem", [(["4", "4"], "twice"), (["3"], "equal groups"),
                                             (["64"], "equal groups")])
def test_ablate_groups_refuses_bad_k(tmp_path, groups, problem, capsys):
    from localnorm.experiments import _cli

    assert _cli.main(["ablate-groups", "--groups", *groups, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Received" in err and "batch axis" in err


def test_summarize_seeds_gives_mean_spread_and_ratios(tmp_path, capsys):
    pytest.importorskip("torch")
    from localnorm.experiments import _cli

    common = ["--limit-train", "128", "--limit-test", "48", "--epochs", "1", "--batch-size", "16",
              "--noises", "agn", "--levels", "1", "--methods", "batchnorm", "localnorm",
              "--protocols", "batch", "voting", "--no-progress"]
    for s in (0, 1):
        assert _cli.main(["robustness", *common, "--seed", str(s),
                          "--out", str(tmp_path / f"s{s}")]) == 0
    assert _cli.main(["summarize-seeds", str(tmp_path / "s0"), str(tmp_path / "s1"),
                      "--out", str(tmp_path / "sum")]) == 0
    s = json.loads((tmp_path / "sum" / "seeds.json").read_text())
    assert s["seeds"] == [0, 1]
    runs = [json.loads((tmp_path / f"s{i}" / "results.json").read_text())["records"] for i in (0, 1)]

    def acc(recs, m, p):
        return next(r["accuracy"] for r in recs if (r["method"], r["protocol"], r["noise"]) == (m, p, "agn"))

    ratio = next(r["ratio"] for r in s["ratios"] if (r["noise"], r["localnorm"], r["baseline"])
                 == ("agn", "batch", "batchnorm"))
    expected = [acc(rs, "localnorm", "batch") / acc(rs, "batchnorm", "running") for rs in runs]
    assert ratio["values"] == pytest.approx(expected)
    assert ratio["mean"] == pytest.approx(np.mean(expected))
    assert ratio["std"] == pytest.approx(np.std(expected, ddof=1))
    assert "±" in (tmp_path / "sum" / "seeds.md").read_text()
    # Runs with other settings than the seed are refused.
    assert _cli.main(["robustness", *common, "--epochs", "2", "--out", str(tmp_path / "e2")]) == 0
    capsys.readouterr()
    assert _cli.main(["summarize-seeds", str(tmp_path / "s0"), str(tmp_path / "e2"),
                      "--out", str(tmp_path / "bad")]) == 2
    assert "epochs" in capsys.readouterr().err
