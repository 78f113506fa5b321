"""Every input rule of local_norm: each bad input raises the right type, early, with a
message that names the offending values (meaning is tested, not wording). The public
functional and the NumPy reference share the checks and are both held to them."""

from __future__ import annotations

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
    # repr: the string "1" must not read as the valid axis 1 the fix then suggests
    with raises(LocalNormError, f"axis={axis!r}"):
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


@pytest.mark.parametrize("name", ["x", "gamma", "beta"])
@pytest.mark.parametrize("value", [None, 1.0, [[1.0, 1.0, 1.0]] * 2])
def test_argument_that_is_not_an_array(name, value):
    """None or a Python number or list for x, gamma or beta is refused by name (None
    passed array-api-compat's namespace lookup and failed later with an AttributeError;
    a list for x was called a mix of array libraries)."""
    args = dict(zip(("x", "gamma", "beta"), _data()))
    args[name] = value
    with raises(TypeError, f"type({name})={type(value).__name__}"):
        localnorm.local_norm(args["x"], args["gamma"], args["beta"], axis=1)


@pytest.mark.parametrize("fn", ["group_sizes", "group_index"])
@pytest.mark.parametrize("batch, num_groups, needle", [
    (-1, 4, "batch=-1"), (8.0, 4, "batch=8.0"), (True, 4, "batch=True"),
    (8, 0, "num_groups=0"), (8, 2.0, "num_groups=2.0"), (8, None, "num_groups=None"),
])
def test_group_layout_refuses_bad_sizes(fn, batch, num_groups, needle):
    """The public layout functions name a bad batch or K (before: a ZeroDivisionError for
    K = 0, a slicing TypeError for a float batch, and silently negative sizes for a
    negative batch)."""
    with raises(LocalNormError, needle):
        getattr(localnorm, fn)(batch, num_groups)


@pytest.mark.parametrize("name", ["gamma", "beta"])
def test_reference_names_a_parameter_that_is_no_number(name):
    """The reference reads array-likes, and names one it cannot read as numbers (it
    raised NumPy's "could not convert string to float")."""
    args = dict(zip(("x", "gamma", "beta"), _data()))
    args[name] = "ones"
    with raises(TypeError, f"type({name})=str"):
        localnorm.reference.local_norm(args["x"], args["gamma"], args["beta"], axis=1)


def test_wrong_channel_count_names_both(impl):
    x, _, _ = _data(c=3)
    with raises(LocalNormError, "(K, 3)", "gamma.shape=(2, 5)"):
        impl(x, np.ones((2, 5)), np.zeros((2, 5)), axis=1)


def _sample_args():
    """One call per message builder of the core; a builder missing here fails the test
    below. (Each adapter's and the application's builders are checked in their own
    tests: tests/torch, tests/keras, tests/flax, tests/cli.)"""
    return {
        "not_floating": [("int32",)],
        "noise_not_floating": [("uint8",)],
        "bad_rank": [(1, ">= 2")],
        "bad_axis": [(0, 3), ((1, 2),)],
        "bad_channels": [(5, 3)],
        "bad_param_shape": [("gamma", (3,), "(K, 3)")],
        "bad_num_groups": [(0,)],
        "bad_batch_count": [(-1,)],
        "bad_eps": [(-1.0,)],
        "bad_choice": [("mode", "x", ("batch",)), ("partition", "x", ("strided",)),
                       ("protocol", "x", ("batch",)), ("vote", "x", ("hard",)),
                       ("dataset", "x", ("digits",))],
        "bad_group": [(5, 2), (5, 2, True)],
        "group_array_mismatch": [(3, 4)],
        "group_array_not_single": [("set",)],
        "empty_batch": [()],
        "running_not_tracked": [()],
        "too_few_samples": [(1, 4)],
        "single_value_statistics": [("batch", 1, (4, 3))],
        "not_finite": [(), ("x", 3, 24)],
        "mixed_namespaces": [("type(x)=numpy.ndarray, type(gamma)=torch.Tensor",)],
        "not_an_argument_array": [("x", None), ("gamma", None)],
        "bad_scores": [((2, 3),)],
        "checkpoint_mismatch": [("gamma", (2, 3), (4, 3))],
        "running_needs_shared": [("LocalNormalization",)],
        "bad_momentum": [(1.5, "0.99"), (-1.0, "0.1", True)],
        "bad_flag": [("affine", "no")],
        "ghost_groups_missing": [()],
        "ghost_groups_both": [(4, 32)],
        "bad_virtual_batch_size": [(0,)],
        "virtual_batch_needs_shared": [(32,)],
        "batch_size_below_groups": [(2, 4)],
        "bad_protocol_inputs": [("voting", 2, 4, "a set of at least 4 images"),
                                ("batch", 2, 4, "at least 4 images (one per group)")],
        "bad_noise_level": [("sigma", -1, ">= 0")],
        "no_localnorm_layers": [("set_eval_mode",)],
        "inconsistent_layers": [("num_groups", [2, 4])],
        "bad_num_features": [(0,)],
        "running_unsupported": [("localnorm.flax.LocalNorm",)],
        "bad_generator": [("abc",)],
        "bad_protocol_size": [("batch_size", 0), ("set_size", -1), ("chunk", 0)],
        "bad_seed": [("abc",)],
        "eps_underflows": [(1e-50, 1.1754944e-38)],
        "group_array_rank": [((8, 1), 8), ((8, 1),)],
        "bad_scores_type": [([[1], [2, 3]], "ragged")],
        "scores_not_finite": [(2, False), (1, True)],
        "soft_vote_not_probabilities": [(-3.0, 4.5)],
        "not_an_array": [("x", "abc")],
        "not_class_scores": [((8, 3, 4, 4), 8)],
        "group_not_used": [("voting", 2)],
    }


def test_every_message_has_received_and_fix_and_groups_along_batch_axis():
    """Every builder of the core follows the template (the values received, a remedy, no
    unformatted placeholder, and, where it speaks of groups, which groups it means)."""
    from localnorm import _errors

    table = _sample_args()
    builders = _errors.builders(_errors)
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    for name, calls in table.items():
        for args in calls:
            e = builders[name](*args)
            assert isinstance(e, (ValueError, TypeError)), name
            assert not _errors.template_problems(str(e)), (name, str(e))


@pytest.mark.parametrize("message, problem", [
    ("groups are bad. Received: x=1. Fix: none.", "batch axis"),
    ("bad along the batch axis. Fix: none.", "Received"),
    ("bad. Received: x=1.", "remedy"),
    ("bad {rmax}. Received: x=1. Fix: none.", "placeholder"),
])
def test_the_template_check_finds_each_missing_part(message, problem):
    from localnorm import _errors

    assert any(problem in p for p in _errors.template_problems(message))
    assert not _errors.template_problems(
        "Bad groups along the batch axis. Received: x=1. Fix: none.")


def test_the_core_knows_no_adapter():
    """The core's messages name no framework's vocabulary unless asked through a dialect:
    its default wording is the functional's (``eps=``, NumPy's cast)."""
    from localnorm import _errors

    assert "num_features" not in str(_errors.bad_channels(5, 3, name="gamma.shape[1]"))
    assert "x.astype(np.float32)" in str(_errors.not_floating("int32"))
    assert "eps=-1" in str(_errors.bad_eps(-1))
    assert "'running'" not in str(_errors.single_value_statistics("single", 1, (2, 3)))
    assert not hasattr(_errors, "TORCH") and not hasattr(_errors, "KERAS")
    assert "group=None" in str(_errors.bad_group(5, 2, allow_none=True))
    assert "group=None" not in str(_errors.bad_group(5, 2))
