"""Subjects "flax" and "flax-linen": the Flax layers :class:`localnorm.flax.LocalNorm`
(NNX) and :class:`localnorm.flax.linen.LocalNorm`, in evaluation (``deterministic``) with
the case's mode and group, gradients by ``jax.vjp`` through the layer.

float64 cases need JAX's 64-bit mode; every call runs under ``jax.enable_x64(True)``,
scoped to the call, so the process-wide flag (and float32 defaults elsewhere) are left
alone. Parameters are float32 for float16/bfloat16 input (a mixed-precision layer's
``param_dtype``) and x's dtype otherwise.

Speed: forward and vjp run under ``jax.jit`` (one XLA compilation per case instead of
one per operation, cached per layer configuration, backend optimization level 0), which
is how Flax models run. Per-sample groups are traced data (as in the layers), so cases
that differ only in their group values share a compilation. Input checks that need
values (NaN/Inf) only happen eagerly, so input that is not finite is run through the
layer eagerly, where the layer itself must refuse it.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..harness import Case, Harness

_LOW = ("float16", "bfloat16")


def _param_dtype(dtype: str) -> str:
    return "float32" if dtype in _LOW else dtype


def _group(case: Case):
    """An int group as it is; a per-sample group as a NumPy array. Anything else (a float,
    a bool, a 0-d array: rows of the bad-input battery) reaches the layer as it is."""
    group = case.group
    if isinstance(group, (int, np.integer, float)) or (
            isinstance(group, np.ndarray) and group.ndim == 0):
        return group
    return np.asarray(group)


def _to_numpy(y, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(y.astype("float32")).astype(ml_dtypes.bfloat16)
    return np.asarray(y)


class _FlaxHarness(Harness):
    dtypes = ("float64", "float32", "float16", "bfloat16")
    grads = True
    compiles = True  # shapes from strategies.CATALOG, so compiled programs are reused

    @classmethod
    def unavailable(cls):
        absent = [m for m in ("jax", "flax") if importlib.util.find_spec(m) is None]
        return f"{', '.join(absent)} not installed" if absent else None

    def _apply(self, case: Case):
        """``(f, params, groups)``: ``f(x, params, groups)`` is the layer's output;
        params a pytree of the parameters, groups a pytree whose leaves (none for an int
        group) are the per-sample group array."""
        raise NotImplementedError

    def _compiled(self, case: Case):
        """``(jit(f), jit(vjp of f), params, groups)``, shared by cases of one
        configuration (per-sample groups: by their length, not their values)."""
        group = _group(case)
        key = (case.num_features, case.num_groups, case.eps, case.axis, case.partition,
               case.mode, _param_dtype(case.dtype), case.shared_affine,
               ("per-sample", len(group)) if isinstance(group, np.ndarray) and group.ndim
               else repr(group))
        return _compile(type(self), key, case)

    def forward(self, case: Case) -> np.ndarray:
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            x = jnp.asarray(case.x)
            if not np.all(np.isfinite(np.asarray(case.x, dtype=np.float64))):
                f, params, groups = self._apply(case)
                return _to_numpy(f(x, params, groups), case.dtype)  # eager: the layer checks
            f, _, params, groups = self._compiled(case)
            return _to_numpy(f(x, params, groups), case.dtype)

    def vjp(self, case, cotangent):
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            _, vjp, params, groups = self._compiled(case)
            ct = jnp.asarray(np.asarray(cotangent, dtype=np.float64)).astype(case.x.dtype)
            dx, dp = vjp(jnp.asarray(case.x), params, groups, ct)
            dgamma, dbeta = self._param_grads(dp)
            return tuple(np.asarray(g, dtype=np.float64) for g in (dx, dgamma, dbeta))


def _compile(cls, key, case):
    """Cached jitted forward/vjp, with this case's gamma, beta and per-sample groups
    placed into the cached pytrees (no layer is rebuilt for a configuration seen
    before)."""
    import jax
    import jax.numpy as jnp

    if (cls, key) not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        f, params, groups = cls()._apply(case)

        def vjp(x, params, groups, ct):
            return jax.vjp(lambda x, p: f(x, p, groups), x, params)[1](ct)

        paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        order = ["gamma" if "scale" in jax.tree_util.keystr(path) else "beta"
                 for path, _ in paths]
        _CACHE[cls, key] = (jax.jit(f, compiler_options=_FAST_COMPILE),
                            jax.jit(vjp, compiler_options=_FAST_COMPILE), treedef, order,
                            jax.tree_util.tree_structure(groups))
    fwd, vjp, treedef, order, gtree = _CACHE[cls, key]
    pd = _param_dtype(case.dtype)
    values = {"gamma": jnp.asarray(case.gamma.astype(pd)),
              "beta": jnp.asarray(case.beta.astype(pd))}
    group = jnp.asarray(_group(case), jnp.int32)
    return (fwd, vjp, jax.tree_util.tree_unflatten(treedef, [values[o] for o in order]),
            jax.tree_util.tree_unflatten(gtree, [group] * gtree.num_leaves))


_CACHE: dict = {}

#: XLA CPU compilation dominates the suite's time (one small program per drawn shape);
#: the backend's optimization level does not change the program's arithmetic.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


class FlaxNNXHarness(_FlaxHarness):
    """``localnorm.flax.LocalNorm`` through ``nnx.split``/``nnx.merge``."""

    name = "flax"
    options = {"flag": ("use_bias", "use_scale", "deterministic", "check_finite",
                        "shared_affine", "track_running_stats"),
               "momentum": ("momentum",), "num_features": ("num_features",)}

    def build_layer(self, **options):
        from flax import nnx

        from localnorm.flax import LocalNorm

        options = {"num_features": 3, "num_groups": 2, **options}
        return LocalNorm(**options, rngs=nnx.Rngs(0))

    def _apply(self, case):
        import jax.numpy as jnp
        from flax import nnx

        from localnorm.flax import LocalNorm

        pd = _param_dtype(case.dtype)
        layer = LocalNorm(
            case.num_features, num_groups=case.num_groups, epsilon=case.eps, axis=case.axis,
            partition=case.partition, param_dtype=pd, rngs=nnx.Rngs(0),
            shared_affine=case.shared_affine,
        )
        layer.scale[...] = jnp.asarray(case.gamma.astype(pd))
        layer.bias[...] = jnp.asarray(case.beta.astype(pd))
        layer.eval()
        layer.set_mode(case.mode, _group(case))
        graphdef, params, groups = nnx.split(layer, nnx.Param, ...)

        def f(x, params, groups):
            return nnx.merge(graphdef, params, groups)(x)

        return f, params, groups

    def _param_grads(self, dp):
        return dp["scale"][...], dp["bias"][...]


class FlaxLinenHarness(_FlaxHarness):
    """``localnorm.flax.linen.LocalNorm`` through ``Module.apply``."""

    name = "flax-linen"
    options = {"flag": ("use_bias", "use_scale", "deterministic", "check_finite",
                        "shared_affine", "track_running_stats"),
               "momentum": ("momentum",)}

    def build_layer(self, **options):
        from localnorm.flax.linen import LocalNorm

        return LocalNorm(**{"num_groups": 2, **options})

    def _apply(self, case):
        import jax.numpy as jnp

        from localnorm.flax.linen import LocalNorm

        pd = _param_dtype(case.dtype)
        layer = LocalNorm(
            num_groups=case.num_groups, epsilon=case.eps, axis=case.axis,
            partition=case.partition, param_dtype=pd, deterministic=True,
            shared_affine=case.shared_affine,
        )
        params = {"params": {"scale": jnp.asarray(case.gamma.astype(pd)),
                             "bias": jnp.asarray(case.beta.astype(pd))}}
        group = _group(case)
        groups = (jnp.asarray(group, jnp.int32) if isinstance(group, np.ndarray)
                  and group.ndim else None)  # a 0-d array is passed as it is, uncast

        def f(x, params, groups):
            return layer.apply(params, x, mode=case.mode,
                               group=group if groups is None else groups)

        return f, params, groups

    def _param_grads(self, dp):
        return dp["params"]["scale"], dp["params"]["bias"]
