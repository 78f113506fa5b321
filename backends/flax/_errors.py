"""The Flax adapter's error messages: its dialects (how the core's messages name Flax's
arguments and remedies, for NNX and for Linen) and the messages of its own features (the
channel axis, group-per-device sharding over a mesh axis). The template and the core's
messages are in :mod:`localnorm._errors`."""

from __future__ import annotations

import dataclasses
from typing import Any

from localnorm._errors import Dialect, LocalNormError

FLAX = Dialect(
    eps="epsilon",
    channels_fix="build the layer with num_features={received}",
    rank_fix="add the missing batch/channel axes (a single image still needs a batch axis "
    "of size 1)",
    cast="`x.astype(jnp.float32)`",
    batch_fix="drop the last, short batch of each epoch",
    has_running=False,
    finite_off="build the layer with check_finite=False (or pass check_finite=False to "
    "predict)",
)


#: Linen layers infer C from the input when their variables are created, so a channel
#: mismatch is fixed by new variables, not by a constructor argument.
FLAX_LINEN = dataclasses.replace(
    FLAX,
    channels_fix="initialize variables for inputs with {received} channels "
    "(`variables = layer.init(key, x)`; a Linen layer fixes C when its variables are "
    "created)",
)


def unbound_axis_name(axis_name: str, where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} was built with axis_name={axis_name!r} for group-per-device data "
        "parallelism (each device's shard of the batch holds whole groups along the batch "
        f"axis), but it is called where no mesh axis {axis_name!r} is bound, i.e. outside "
        f"`jax.shard_map`. Received: axis_name={axis_name!r} with no bound mesh axis. Fix: "
        "call the model inside `jax.shard_map(..., mesh=mesh, in_specs=..., out_specs=...)` "
        f"over a mesh with axis {axis_name!r}; or, for single-device use, set "
        "`layer.axis_name = None` (the same result on the whole batch) or evaluate with "
        "`localnorm.flax.predict(model, x)`, which runs such layers on one device."
    )


def sharded_partition(partition: str) -> LocalNormError:
    return LocalNormError(
        "Group-per-device sharding (axis_name set) needs partition='contiguous': each "
        "device's shard of the batch must hold whole groups along the batch axis, which "
        f"only contiguous groups give. Received: partition={partition!r}. Fix: build the "
        "layer with partition='contiguous', or run it unsharded."
    )


def sharded_groups(num_groups: int, devices: int, axis_name: str) -> LocalNormError:
    return LocalNormError(
        f"Group-per-device sharding over mesh axis {axis_name!r} gives each of its {devices} "
        f"devices num_groups / {devices} whole groups along the batch axis, so num_groups "
        f"must be a multiple of the axis size. Received: num_groups={num_groups}, "
        f"axis_size={devices}. Fix: use num_groups = {devices} (one group per device) or a "
        "multiple of it, or a mesh axis with fewer devices."
    )


def sharded_ragged(local_batch: int, local_groups: int, devices: int,
                   axis_name: str) -> LocalNormError:
    return LocalNormError(
        f"Group-per-device sharding over mesh axis {axis_name!r} gives each of its {devices} "
        f"devices {local_groups} whole group(s) along the batch axis, so each device's shard "
        f"of the batch must split into {local_groups} equal groups; otherwise the groups "
        "would differ from the single-device layer's on the whole batch. Received: local "
        f"x.shape[0]={local_batch} (global batch {local_batch * devices}), "
        f"{local_groups} group(s) per device. Fix: use a global batch that is a multiple "
        f"of num_groups={local_groups * devices} (drop the last, short batch of each epoch)."
    )


def sharded_virtual_batch(local_batch: int, virtual_batch_size: int, num_groups: int,
                          devices: int, axis_name: str, where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} counts K = max(1, N // virtual_batch_size) groups along the batch axis on "
        f"the global batch, and group-per-device sharding over mesh axis {axis_name!r} "
        f"needs whole groups on each of its {devices} devices: K a multiple of {devices}, "
        "and each device's shard of the batch a multiple of its K / devices groups. "
        f"Received: global x.shape[0]={local_batch * devices} (local {local_batch}), "
        f"virtual_batch_size={virtual_batch_size}, so K={num_groups}; axis_size={devices}. "
        f"Fix: use a global batch that is a multiple of {devices} * virtual_batch_size = "
        f"{devices * virtual_batch_size} (drop the last, short batch of each epoch), or "
        f"build the layer with a fixed num_groups that is a multiple of {devices}."
    )


def sharded_group_array(length: int, local_batch: int, devices: int,
                        axis_name: str) -> LocalNormError:
    return LocalNormError(
        "A per-sample group array (one group along the batch axis per sample) used inside "
        f"`jax.shard_map` over mesh axis {axis_name!r} must have one entry per sample of "
        f"the local shard ({local_batch}) or of the global batch ({local_batch * devices}, "
        f"sliced per device). Received: len(group)={length}, local x.shape[0]={local_batch}, "
        f"axis_size={devices}. Fix: pass a group array of length {local_batch * devices} "
        "for the global batch, or an int group."
    )


def traced_group(group: Any, mode: str) -> LocalNormError:
    what = ("an int group picks the row of scale/bias (one group along the batch axis) "
            "when the program is traced" if mode in ("single", "set") else
            "the group is not used, but an int group is still checked as in every mode "
            "(an int in [0, K), K groups along the batch axis)")
    return LocalNormError(
        f"In {mode!r} mode {what}, so it must be a concrete int, not a value traced by "
        f"`jax.jit`/`nnx.jit`. Received: group=traced {group.dtype}[] scalar. Fix: pass a "
        "Python int (static: one compilation per group; any valid int, e.g. 0, where the "
        "mode does not use it), or in 'single' mode a per-sample group array, e.g. "
        "`jnp.full((x.shape[0],), g)`, which is traced data."
    )


def bad_key_generator(generator: Any) -> LocalNormError:
    return LocalNormError(
        "generator is the seedable source of the random groups (along the batch axis) "
        "drawn when group=None; a jax array there must be one PRNG key (a "
        "`jax.random.key(seed)`, or a legacy uint32 `jax.random.PRNGKey(seed)` of shape "
        f"(2,)). Received: generator with shape {tuple(generator.shape)} and dtype "
        f"{generator.dtype}. Fix: pass one key, e.g. generator=jax.random.key(0) (not a "
        "batch of keys from jax.random.split), or an int seed such as generator=0."
    )


def not_nnx_module(model: Any) -> LocalNormError:
    linen = any(c.__module__.startswith("flax.linen") for c in type(model).__mro__)
    what = "a flax.linen Module" if linen else "not an nnx.Module"
    return LocalNormError(
        "convert_batchnorm replaces the nnx.BatchNorm layers of a Flax NNX model (an "
        f"nnx.Module, or an nnx.BatchNorm itself). Received: type(model)="
        f"{type(model).__name__} ({what}). Fix: pass an NNX model; a Linen model is a "
        "definition, not an object to convert: write localnorm.flax.linen.LocalNorm (or "
        "GhostBatchNorm) where it has nn.BatchNorm and initialize its variables again."
    )


def bad_dtype(name: str, value: Any) -> LocalNormError:
    default = "None (the input's dtype)" if name == "dtype" else "jnp.float32"
    return LocalNormError(
        f"{name} is the dtype of the layer's {'result' if name == 'dtype' else 'scale and bias'}"
        ", and LocalNorm's output and parameters are real floating point (a cast to an "
        "integer or complex dtype would silently truncate them). Received: "
        f"{name}={value!r}. Fix: pass a real floating dtype (jnp.float32, jnp.bfloat16, "
        f"jnp.float16, jnp.float64) or leave the default {default}."
    )


def bad_axis_name(axis_name: Any) -> LocalNormError:
    return LocalNormError(
        "axis_name names the mesh axis (inside `jax.shard_map`) over which the batch is "
        "sharded, each device holding whole groups along the batch axis: a string, a "
        "tuple of strings for several mesh axes, or None for no sharding (JAX reads an "
        f"int as a positional array axis instead). Received: axis_name={axis_name!r}. "
        "Fix: pass the mesh axis's name, e.g. axis_name='data' for "
        "`Mesh(devices, ('data',))`, or None."
    )


def symbolic_virtual_batch(where: str, batch: Any, virtual_batch_size: int) -> LocalNormError:
    return LocalNormError(
        f"{where} counts its groups along the batch axis from each training batch's size "
        f"(K = max(1, N // virtual_batch_size)), but this batch size is symbolic (a "
        "`jax.export` with a symbolic batch) inside `jax.shard_map`, where K must split "
        "into whole groups per device, so K cannot be counted. Received: "
        f"x.shape[0]={batch} (symbolic), virtual_batch_size={virtual_batch_size}. Fix: "
        "export the sharded training step with a concrete batch size, or build the layer "
        "with a fixed num_groups; an exported evaluation ('running' mode) takes any batch "
        "size."
    )


def symbolic_group_array(length: int, batch: Any) -> LocalNormError:
    return LocalNormError(
        "A per-sample group array gives one group along the batch axis to each sample, so "
        "its length is the batch size; this one has a fixed length, but the batch size is "
        "symbolic (a `jax.export` with a symbolic batch), so it cannot fit every batch the "
        f"program takes. Received: len(group)={length}, x.shape[0]={batch} (symbolic). Fix: "
        "make the groups an argument of the exported function, of the same symbolic length "
        "as the batch, and set them inside it (`localnorm.flax.set_eval_mode(model, "
        "'single', group)`); or export with a concrete batch size; or use an int group."
    )
