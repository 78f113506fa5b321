"""Every input rule of local_norm: each bad input raises the right type, early, with a
message that names the offending values (meaning is tested, not wording). The public
functional and the NumPy reference share the checks and are both held to them."""

from __future__ import annotations

import re

import numpy as np
import pytest

import localnorm
from localnorm import LocalNormError, reference

IMPLS = {"local_norm": localnorm.local_norm, "reference": reference.local_norm}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


def _data(n=8, c=3, spatial=(4,), k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, *spatial))
    return x, np.ones((k, c)), np.zeros((k, c))


def raises(exc_type, *needles):
    """pytest.raises that also checks the message names every needle (case-insensitive)."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc_type)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.ctx.__exit__(*exc)
            msg = str(self.info.value).lower()
            for needle in needles:
                assert needle.lower() in msg, f"{needle!r} not in message: {msg}"
            assert "fix" in msg, f"no remedy in message: {msg}"
            return suppressed

    return _Check()


def test_errors_are_valueerrors_subclass():
    assert issubclass(LocalNormError, ValueError)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "uint8"])
def test_non_floating_x(impl, dtype):
    x, g, b = _data()
    with raises(TypeError, f"x.dtype={np.dtype(dtype)}"):
        impl(x.astype(dtype), g, b, axis=1)


def test_complex_x_refused():
    x, g, b = _data()
    with pytest.raises(TypeError):
        localnorm.local_norm(x.astype(np.complex128), g.astype(np.complex128),
                             b.astype(np.complex128), axis=1)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_rank_below_two(impl, shape):
    x = np.zeros(shape)
    with raises(LocalNormError, f"x.ndim={len(shape)}"):
        impl(x, np.ones((1, 1)), np.zeros((1, 1)))


@pytest.mark.parametrize("axis", [0, 3, -4, 10, -10])
def test_axis_out_of_range_or_batch(impl, axis):
    x, g, b = _data()
    with raises(LocalNormError, f"axis={axis}", "x.ndim=3", "batch axis"):
        impl(x, g, b, axis=axis)


@pytest.mark.parametrize("axis", [1.0, "1", None])
def test_axis_not_an_int(impl, axis):
    x, g, b = _data()
    with raises(LocalNormError, f"axis={axis}"):
        impl(x, g, b, axis=axis)


@pytest.mark.parametrize(
    "name, shape",
    [("gamma", (3,)), ("gamma", (2, 4)), ("gamma", (2, 3, 1)), ("gamma", (0, 3)),
     ("beta", (3,)), ("beta", (2, 2))],
)
def test_param_not_k_by_c(impl, name, shape):
    x, g, b = _data()
    params = {"gamma": g, "beta": b}
    params[name] = np.ones(shape)
    with raises(LocalNormError, f"{name}.shape={shape}", "(K, 3)", "along the batch axis"):
        impl(x, params["gamma"], params["beta"], axis=1)


def test_gamma_beta_disagree_on_k(impl):
    x, g, _ = _data()
    with raises(LocalNormError, "beta.shape=(3, 3)", "(2, 3)"):
        impl(x, g, np.zeros((3, 3)), axis=1)


@pytest.mark.parametrize("mode", ["Batch", "sets", "running", "", None, 1])
def test_unknown_mode(impl, mode):
    x, g, b = _data()
    with raises(LocalNormError, f"mode={mode!r}", "'batch'", "'single'", "'set'"):
        impl(x, g, b, axis=1, mode=mode)


@pytest.mark.parametrize("partition", ["interleaved", "Strided", None])
def test_unknown_partition(impl, partition):
    x, g, b = _data()
    with raises(LocalNormError, f"partition={partition!r}", "'contiguous'", "'strided'"):
        impl(x, g, b, axis=1, partition=partition)


@pytest.mark.parametrize("group", [2, -1, 7, True, 1.0, "0", None])
@pytest.mark.parametrize("mode", ["single", "set"])
def test_group_out_of_range_or_wrong_type(impl, mode, group):
    x, g, b = _data(k=2)
    with raises(LocalNormError, f"group={group!r}", "[0, 1]"):
        impl(x, g, b, axis=1, mode=mode, group=group)


def test_group_zero_d_array_is_an_int(impl):
    x, g, b = _data(k=2)
    y = impl(x, g, b, axis=1, mode="set", group=np.int64(1))
    np.testing.assert_allclose(y, impl(x, g, b, axis=1, mode="set", group=1))
    y0 = impl(x, g, b, axis=1, mode="set", group=np.array(1))
    np.testing.assert_allclose(y0, y)


@pytest.mark.parametrize("group", [[0, 1, 2, 0, 1, 0, 1, 0], [0, -1, 0, 0, 0, 0, 0, 0]])
def test_group_array_values_out_of_range(impl, group):
    x, g, b = _data(k=2)
    with raises(LocalNormError, "group=", "[0, 1]"):
        impl(x, g, b, axis=1, mode="single", group=np.array(group))


def test_group_array_float_refused(impl):
    x, g, b = _data(k=2)
    with raises(LocalNormError, "group="):
        impl(x, g, b, axis=1, mode="single", group=np.zeros(8))


@pytest.mark.parametrize("length", [1, 7, 9])
def test_group_array_wrong_length(impl, length):
    x, g, b = _data(n=8, k=2)
    with raises(LocalNormError, f"len(group)={length}", "x.shape[0]=8"):
        impl(x, g, b, axis=1, mode="single", group=np.zeros(length, dtype=np.int64))


def test_group_array_2d_refused(impl):
    x, g, b = _data(n=8, k=2)
    with raises(LocalNormError, "x.shape[0]=8"):
        impl(x, g, b, axis=1, mode="single", group=np.zeros((8, 1), dtype=np.int64))


@pytest.mark.parametrize("mode", ["set", "batch"])
def test_group_array_outside_single_mode(impl, mode):
    x, g, b = _data(n=8, k=2)
    with raises(LocalNormError, f"mode={mode!r}", "'single'"):
        impl(x, g, b, axis=1, mode=mode, group=np.zeros(8, dtype=np.int64))


@pytest.mark.parametrize("mode", ["batch", "single", "set"])
def test_empty_batch(impl, mode):
    x, g, b = _data()
    with raises(LocalNormError, "x.shape[0]=0", "empty"):
        impl(x[:0], g, b, axis=1, mode=mode)


@pytest.mark.parametrize("n, k", [(1, 2), (3, 4), (2, 3)])
def test_fewer_samples_than_groups(impl, n, k):
    x, g, b = _data(n=n, k=k)
    with raises(LocalNormError, f"x.shape[0]={n}", f"num_groups={k}", "single", "set"):
        impl(x, g, b, axis=1)


def test_fewer_samples_than_groups_fine_in_single_and_set(impl):
    x, g, b = _data(n=1, k=4)
    assert np.all(np.isfinite(impl(x, g, b, axis=1, mode="single", group=3)))
    assert np.all(np.isfinite(impl(x, g, b, axis=1, mode="set", group=3)))


@pytest.mark.parametrize(
    "shape, k, mode",
    [((4, 3), 4, "batch"),  # dense layer, one sample per group
     ((5, 3), 4, "batch"),  # ragged: the smallest group holds one sample
     ((4, 3), 2, "single"),  # one value per channel per sample
     ((1, 3), 1, "set"),
     ((6, 3, 1, 1), 2, "single")],
)
def test_single_value_statistics(impl, shape, k, mode):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    with raises(LocalNormError, f"x.shape={shape}", f"mode={mode!r}", "1 value"):
        impl(x, np.ones((k, 3)), np.zeros((k, 3)), axis=1, mode=mode)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(impl, bad):
    x, g, b = _data()
    x[3, 1, 2] = bad
    with raises(LocalNormError, "NaN or infinite", "x"):
        impl(x, g, b, axis=1)


def test_non_finite_check_can_be_skipped():
    x, g, b = _data()
    x[0, 0, 0] = np.nan
    y = localnorm.local_norm(x, g, b, axis=1, check_finite=False)
    # Only the poisoned group (samples 0..3 of channel 0) is NaN.
    assert np.isnan(y[:4, 0]).all() and np.isfinite(y[4:]).all() and np.isfinite(y[:, 1:]).all()


@pytest.mark.parametrize("eps", [0, 0.0, -1e-5, float("nan"), float("inf"), "small", None])
def test_bad_eps(impl, eps):
    x, g, b = _data()
    with raises(LocalNormError, f"eps={eps!r}"):
        impl(x, g, b, axis=1, eps=eps)


def test_mixed_namespaces():
    torch = pytest.importorskip("torch")
    x, g, b = _data()
    with raises(TypeError, "gamma", "torch"):
        localnorm.local_norm(x, torch.from_numpy(g), b, axis=1)


def test_wrong_channel_count_names_both(impl):
    x, _, _ = _data(c=3)
    with raises(LocalNormError, "(K, 3)", "gamma.shape=(2, 5)"):
        impl(x, np.ones((2, 5)), np.zeros((2, 5)), axis=1)


def _sample_args():
    """One call per message builder; a builder missing here fails the test below."""
    return {
        "not_floating": [("int32",)],
        "bad_rank": [(1, ">= 2")],
        "bad_axis": [(0, 3)],
        "bad_channels": [(5, 3)],
        "bad_param_shape": [("gamma", (3,), "(K, 3)")],
        "bad_num_groups": [(0,)],
        "bad_eps": [(-1.0,)],
        "bad_choice": [("mode", "x", ("batch",)), ("partition", "x", ("strided",)),
                       ("protocol", "x", ("batch",)), ("vote", "x", ("hard",)),
                       ("dataset", "x", ("digits",))],
        "bad_group": [(5, 2), (5, 2, True)],
        "group_array_mismatch": [(3, 4)],
        "group_array_not_single": [("set",)],
        "empty_batch": [()],
        "too_few_samples": [(1, 4)],
        "single_value_statistics": [("batch", 1, (4, 3))],
        "not_finite": [(), ("x", 3, 24)],
        "mixed_namespaces": [("type(x)=numpy.ndarray, type(gamma)=torch.Tensor",)],
        "bad_scores": [((2, 3),)],
        "checkpoint_mismatch": [("gamma", (2, 3), (4, 3))],
        "running_needs_shared": [("LocalNormalization",)],
        "bad_momentum": [(1.5, "0.99")],
        "virtual_batch_unknown_size": [("GhostBatchNormalization", 32)],
        "ghost_groups_missing": [()],
        "ghost_groups_both": [(4, 32)],
        "bad_virtual_batch_size": [(0,)],
        "virtual_batch_needs_shared": [(32,)],
        "bad_protocol_inputs": [("voting", 2, 4, "a set of at least 4 images"),
                                ("batch", 2, 4, "at least 4 images (one per group)")],
        "running_not_tracked": [()],
        "bad_noise_level": [("sigma", -1, ">= 0")],
        "no_localnorm_layers": [("set_eval_mode",)],
        "inconsistent_layers": [("num_groups", [2, 4])],
        "not_distributed": [("set_group_per_rank",)],
        "dataset_files_missing": [("mnist", "/nowhere", "t10k-images-idx3-ubyte(.gz)")],
        "bad_dataset_file": [("/x.gz", "truncated", "an IDX file")],
        "bad_corruption_severity": [("contrast", 7)],
        "bad_levels": [("agn=", "empty list")],
        "adapter_missing": [("localnorm", "keras", "localnorm.keras")],
        "resume_mismatch": [("/out", "seed", 0, 1)],
        "image_too_small": [("vgg19", (1, 8, 8), 32)],
        "model_not_in_backend": [("vgg19", "keras", ("mnistnet", "resnet"))],
        "bad_group_list": [([4, 4], 64, "some K appear twice")],
        "seed_runs_differ": [("epochs", [8, 2])],
        "too_few_for_groups": [("test split", 3, 4, 4)],
        "bad_num_features": [(0,)],
        "running_unsupported": [("localnorm.flax.LocalNorm",)],
        "sharded_partition": [("strided",)],
        "sharded_groups": [(3, 4, "data")],
        "unknown_channels": [(-1, (None, None))],
        "cannot_convert": [("MyModel",)],
        "bench_suite_missing": [("/site-packages/benchmarks",)],
        "bad_generator": [("abc",)],
        "bad_protocol_size": [("batch_size", 0), ("set_size", -1), ("chunk", 0)],
        "bad_seed": [("abc",)],
        "backend_not_installed": [("flax", "flax", "flax")],
        "bad_confusion": [("agn=3", "the levels of 'agn' in this run are ['1', '2']")],
        "device_unavailable": [("cuda:1", "flax", ["auto", "cpu:0"])],
        "mask_unsupported": [("LocalNormalization",)],
        "bad_channel_axis": [((1, 2),)],
        "unbound_axis_name": [("data", "LocalNorm")],
        "sharded_ragged": [(5, 2, 4, "data")],
        "sharded_group_array": [(7, 4, 4, "data")],
        "lazy_batchnorm": [("LazyBatchNorm2d",)],
        "eps_underflows": [(1e-50, 1.1754944e-38)],
        "group_array_rank": [((8, 1), 8), ((8, 1),)],
        "bad_scores_type": [([[1], [2, 3]], "ragged")],
        "scores_not_finite": [(2, False), (1, True)],
        "soft_vote_not_probabilities": [(-3.0, 4.5)],
        "not_an_array": [("x", "abc")],
        "bad_option": [("--groups", 0, "an int >= 1", "pass K >= 1 groups along the batch axis")],
        "out_not_writable": [("/out", "it is a file")],
        "bad_results_file": [("/out/results.json", "not valid JSON")],
        "bad_checkpoint": [("/out/checkpoints/localnorm.pt", "truncated")],
        "file_error": [(PermissionError(13, "Permission denied", "/out/x"),),
                       (OSError("disk"),)],
    }


def _builders():
    import inspect

    from localnorm import _errors

    return {
        name: fn for name, fn in vars(_errors).items()
        if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == _errors.__name__
    }


def test_every_message_has_received_and_fix_and_groups_along_batch_axis():
    """Every builder: the values received, a remedy, no unformatted placeholder, and, where
    it speaks of groups, which groups it means (along the batch axis, not GroupNorm's)."""
    from localnorm import _errors

    table = _sample_args()
    builders = _builders()
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    dialects = [_errors.CORE, _errors.TORCH, _errors.KERAS, _errors.FLAX]
    for name, calls in table.items():
        for args in calls:
            import inspect

            takes_dialect = "dialect" in inspect.signature(builders[name]).parameters
            for dialect in dialects if takes_dialect else [None]:
                kwargs = {} if dialect is None else {"dialect": dialect}
                e = builders[name](*args, **kwargs)
                assert isinstance(e, (ValueError, TypeError)), name
                text = str(e)
                assert "Received:" in text and "Fix" in text, (name, text)
                assert not re.search(r"\{[a-z_]", text), f"unformatted placeholder: {text}"
                if re.search(r"\bgroups?\b", text, re.IGNORECASE):
                    assert re.search(r"batch axis", text), (name, text)


def test_dialects_speak_their_framework():
    """A fix names the argument and idiom of the framework that raised it."""
    from localnorm import _errors

    assert "epsilon=-1" in str(_errors.bad_eps(-1, _errors.KERAS))
    assert "epsilon=-1" in str(_errors.bad_eps(-1, _errors.FLAX))
    assert "eps=-1" in str(_errors.bad_eps(-1, _errors.TORCH))
    assert "drop_last=True" in str(_errors.too_few_samples(2, 4, _errors.TORCH))
    assert "drop_remainder=True" in str(_errors.too_few_samples(2, 4, _errors.KERAS))
    assert "LocalNorm2d" in str(_errors.bad_rank(3, "4", dialect=_errors.TORCH))
    assert "LocalNorm2d" not in str(_errors.bad_rank(3, "4", dialect=_errors.KERAS))
    assert "'running'" in str(_errors.single_value_statistics("single", 1, (2, 3),
                                                            _errors.TORCH))
    for d in (_errors.KERAS, _errors.FLAX, _errors.CORE):
        assert "'running'" not in str(_errors.single_value_statistics("single", 1, (2, 3), d))
    assert "num_features=5" in str(_errors.bad_channels(5, 3, dialect=_errors.TORCH))
    assert "num_features=5" not in str(_errors.bad_channels(5, 3, "C", dialect=_errors.KERAS))
    assert "x.float()" in str(_errors.not_floating("int32", _errors.TORCH))
    assert "group=None" in str(_errors.bad_group(5, 2, allow_none=True))
    assert "group=None" not in str(_errors.bad_group(5, 2))