"""The Keras adapter's error messages: its dialect (how the core's messages name Keras's
arguments and remedies) and the messages of its own features (building from an input
spec, masks, model conversion). The template and the core's messages are in
:mod:`localnorm._errors`."""

from __future__ import annotations

from typing import Any

from localnorm._errors import Dialect, LocalNormError

KERAS = Dialect(
    eps="epsilon",
    channels_fix="use a new LocalNormalization layer for inputs with {received} channels "
    "(a layer fixes C when it is built), or pass the axis that holds the channels",
    rank_fix="add the missing batch/channel axes (a single image still needs a batch axis "
    "of size 1)",
    cast="`keras.ops.cast(x, \"float32\")`",
    batch_fix="`dataset.batch(batch_size, drop_remainder=True)`, or a batch_size that "
    "divides the number of samples",
    has_running=False,
    finite_off="build the layer with check_finite=False (or pass check_finite=False to "
    "predict)",
)


def unknown_channels(axis: Any, shape: tuple) -> LocalNormError:
    return LocalNormError(
        "The channel axis of the input has an unknown size, so the (K, C) gamma/beta (one row "
        "per group along the batch axis) cannot be created. "
        f"Received: axis={axis!r}, input_shape={tuple(shape)}. "
        "Fix: give the model an input shape whose channel axis is known, e.g. "
        "`keras.Input(shape=(32, 32, 3))`, or pass the axis that holds the channels."
    )


def cannot_convert(kind: str) -> LocalNormError:
    return LocalNormError(
        "convert_batchnorm() rebuilds a model layer by layer, which needs a Sequential or "
        f"functional model (nested ones included) or a single BatchNormalization layer. "
        "(Each converted layer gets K groups along the batch axis.) "
        f"Received: type(model)={kind}. Fix: for a subclassed model, build it with "
        "LocalNormalization layers directly, or wrap its BatchNorm-using parts in a "
        "functional model and convert that."
    )


def mask_unsupported(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} computes its statistics over every element of each group along the batch "
        "axis and cannot leave masked entries out. Received: a non-None mask. Fix: drop "
        "the mask before this layer, or normalize masked sequences with another layer."
    )


def batchnorm_out_of_reach(name: str, kind: str) -> LocalNormError:
    return LocalNormError(
        "convert_batchnorm() rebuilds Sequential and functional models layer by layer, and "
        f"cannot reach the BatchNormalization inside layer {name!r}, a {kind} (a wrapper or "
        "a custom layer), to give it K groups along the batch axis; it would have stayed a "
        f"BatchNormalization. Received: a BatchNormalization inside {kind}. Fix: build that "
        "layer with a LocalNormalization (or GhostBatchNormalization) directly, or convert "
        "the layer it wraps, e.g. `keras.layers.TimeDistributed(convert_batchnorm(bn))`."
    )


def cannot_copy(name: str, kind: str, saved: int, rebuilt: int) -> LocalNormError:
    return LocalNormError(
        "convert_batchnorm() copies every layer that is not a BatchNormalization (the groups "
        f"along the batch axis concern only those) from its config and weights, but layer "
        f"{name!r}, a {kind}, builds fewer weights from its config than it holds. "
        f"Received: {saved} weights, {rebuilt} after rebuilding from its config. Fix: "
        "create the layer's sublayers' weights in its build() (then Keras can rebuild it), "
        "or build the model with LocalNormalization layers directly."
    )


def not_floating_policy(where: str, policy: str) -> LocalNormError:
    return LocalNormError(
        f"{where} computes means and variances over the groups along the batch axis and "
        "learns a gamma/beta per group, which needs a floating-point dtype policy (its input "
        f"is cast to the policy's compute dtype). Received: dtype={policy!r}. Fix: leave "
        "dtype unset, or pass a floating policy such as 'float32', 'mixed_float16' or "
        "'mixed_bfloat16'."
    )


def group_array_unknown_batch(length: int, batch: Any) -> LocalNormError:
    return LocalNormError(
        "A per-sample group array gives one group along the batch axis to each of exactly "
        f"{length} samples, but this batch size is only known at run time (a symbolic batch "
        "size, as in `model.export` or `jax.export`), where a batch of another size could "
        f"not be refused. Received: len(group)={length}, batch size={batch}. Fix: export "
        f"with a fixed batch size of {length} (e.g. `input_signature=[keras.InputSpec("
        f"shape=({length}, ...))]`), or set an int group (`set_eval_mode(model, 'single', "
        "group=0)`) before exporting."
    )


def virtual_batch_unknown_size(where: str, virtual_batch_size: int) -> LocalNormError:
    return LocalNormError(
        f"{where} counts its groups along the batch axis from each batch's size "
        f"(K = max(1, N // virtual_batch_size), virtual_batch_size={virtual_batch_size}), "
        "but this batch size is only known at run time (`model.export` or `torch.export` "
        "with an open batch size on the PyTorch backend, where K cannot be counted inside "
        "the program). Received: batch size None (symbolic). Fix: export with a fixed "
        "batch size (e.g. `input_signature=[keras.InputSpec(shape=(32, ...))]`); evaluate "
        "in 'running' mode (Ghost BatchNorm's default), which takes any batch size; or "
        "build the layer with a fixed num_groups instead of virtual_batch_size."
    )
