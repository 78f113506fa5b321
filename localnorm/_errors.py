"""The shared template of localnorm's error messages, and the messages of the core's rules.

Every message localnorm raises says what is wrong, what was expected,
``Received: name=value``, and how to fix it (``Fix: ...``); where it speaks of groups it
says they are taken along the batch axis. Each message is built by a function that returns
the exception (the caller raises it); :func:`template_problems` is the template as a check,
run by the tests of every room over its builders. Tests check the meaning (the values
named, the remedy), not the exact wording.

Here live the messages of the core's own rules (groups, partitions, modes, eps, shapes,
protocols, voting, noise) and of the model-level machinery all adapters share
(:mod:`localnorm._model`). A :class:`Dialect` lets one core message speak the words of the
framework that raised it. Each adapter keeps its dialect and its own messages in its
``_errors`` module (``localnorm.torch._errors``, ...), and the robustness application keeps
the CLI's in ``localnorm.experiments._errors``; nothing here knows an adapter.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "LocalNormError",
]


class LocalNormError(ValueError):
    """Base class of the ``ValueError`` subclasses raised for bad LocalNorm input."""

    # Exception's own __init__, so that TensorFlow's AutoGraph re-raises a LocalNormError
    # from inside a user's tf.function as a LocalNormError (it rebuilds only exception
    # types whose constructor is Exception's) instead of wrapping it in a StagingError.
    __init__ = Exception.__init__


@dataclass(frozen=True)
class Dialect:
    """How one entry point names things, so that a message's fix is one a user of that
    framework can type: argument names, the idiomatic cast, the data-loader remedy, and the
    evaluation modes it has. Builders that mention any of these take ``dialect=``."""

    #: The epsilon argument's name.
    eps: str
    #: How to fix a channel count that does not match the layer ({received} is filled in).
    channels_fix: str
    #: How to fix an input of the wrong rank.
    rank_fix: str
    #: The idiomatic cast to a floating dtype.
    cast: str
    #: How to keep batches of at least K samples.
    batch_fix: str
    #: Whether a "running" evaluation mode (per-group running statistics) exists.
    has_running: bool
    #: How to turn the NaN/Inf check off.
    finite_off: str
    #: The running statistics' momentum convention: PyTorch's (the weight of the new
    #: batch, None for a cumulative average) or Keras's and Flax's (the weight kept).
    torch_momentum: bool = False
    #: The layers' default momentum, as the framework's BatchNorm has it.
    momentum_default: str = "0.99"


CORE = Dialect(
    eps="eps",
    channels_fix="pass gamma/beta with one column per channel ({received})",
    rank_fix="add the missing batch/channel axes (a single image still needs a batch axis "
    "of size 1)",
    cast="`x.astype(np.float32)`",
    batch_fix="drop or merge the last, short batch",
    has_running=False,
    finite_off="pass check_finite=False",
)


def listing(values: Iterable[Any]) -> str:
    """``values`` as a message lists them: ``'a', 'b', 'c'``."""
    return ", ".join(repr(v) for v in values)


def template_problems(message: str) -> list[str]:
    """What ``message`` lacks of the template (an empty list when it follows it): the
    values received, a remedy, no unformatted ``{placeholder}`` (a missing ``f``), and,
    where it speaks of groups, which groups (along the batch axis, not GroupNorm's)."""
    problems = []
    if "Received:" not in message:
        problems.append("no 'Received: name=value'")
    if "Fix" not in message:
        problems.append("no remedy ('Fix: ...')")
    if re.search(r"\{[a-z_]", message):
        problems.append("an unformatted {placeholder}")
    if re.search(r"\bgroups?\b", message, re.IGNORECASE) and "batch axis" not in message:
        problems.append("speaks of groups without saying they are along the batch axis")
    return problems


def builders(module: ModuleType) -> dict[str, Callable[..., Exception]]:
    """The message builders defined in ``module`` (its public functions annotated to
    return an exception, ``-> LocalNormError`` or ``-> TypeError``), by name: what a room's
    tests run through :func:`template_problems`."""
    return {
        name: fn for name, fn in vars(module).items()
        if inspect.isfunction(fn) and not name.startswith("_")
        and fn.__module__ == module.__name__
        and str(inspect.signature(fn).return_annotation).endswith("Error")
    }


def not_floating(dtype: Any, dialect: Dialect = CORE) -> TypeError:
    return TypeError(
        "LocalNorm normalizes real floating-point input (its statistics over the groups "
        "along the batch axis are means and variances), but x has a non-floating dtype. "
        f"Expected a float16, bfloat16, float32 or float64 x. Received: x.dtype={dtype}. "
        f"Fix: cast the input first, e.g. {dialect.cast}."
    )


def noise_not_floating(dtype: Any) -> TypeError:
    return TypeError(
        "The noise functions return the noisy images in x's dtype, and noise multiplied "
        "into an integer or bool image would be truncated: x must be real floating point "
        f"(float16, bfloat16, float32 or float64). Received: x.dtype={dtype}. Fix: cast "
        "the images first, e.g. `x.astype(np.float32)` (the noise is multiplicative, so "
        "any scale, [0, 1] or [0, 255], works)."
    )


def bad_rank(ndim: int, expected: str, where: str = "local_norm",
             dialect: Dialect = CORE) -> LocalNormError:
    return LocalNormError(
        f"{where} expected input of rank {expected} (the batch axis 0, along which the "
        f"groups are taken, then channels and optional spatial axes). Received: x.ndim={ndim}. "
        f"Fix: {dialect.rank_fix}."
    )


def bad_axis(axis: Any, ndim: int | None = None) -> LocalNormError:
    if ndim is None:  # a layer's axis, checked before the input's rank is known
        return LocalNormError(
            "axis is the one channel axis of the input: a single int other than 0 (axis 0 is "
            "the batch axis, along which the groups are taken); negative values count from "
            f"the end. Received: axis={axis!r}. Fix: pass one int, e.g. axis=-1 for "
            "channels-last input or axis=1 for channels-first."
        )
    return LocalNormError(
        "The channel axis must be one of the non-batch axes of x (axis 0 is the batch axis, "
        f"along which the groups are taken). Received: axis={axis!r} for x.ndim={ndim}. "
        f"Fix: pass axis in [1, {ndim - 1}] or [-{ndim - 1}, -1]."
    )


def bad_channels(received: int, expected: int, name: str = "num_features",
                 dialect: Dialect = CORE) -> LocalNormError:
    return LocalNormError(
        f"The channel axis of x has {received} channels but the layer's (K, C) parameters "
        f"(one row per group along the batch axis) were built for C={expected}. "
        f"Received: x.shape[axis]={received}, {name}={expected}. "
        f"Fix: {dialect.channels_fix.format(received=received)}, or check which axis holds "
        "the channels (torch uses axis 1; keras and flax default to the last axis)."
    )


def bad_param_shape(name: str, shape: tuple, expected: str) -> LocalNormError:
    return LocalNormError(
        f"{name} must have shape (K, C): one row per group along the batch axis and one "
        f"column per channel. Expected {expected}. Received: {name}.shape={tuple(shape)}. "
        f"Fix: give {name} one row per group, e.g. tile a BatchNorm vector with "
        f"`{name}[None, :].repeat(K, 0)`."
    )


def bad_num_groups(num_groups: Any) -> LocalNormError:
    return LocalNormError(
        "num_groups (the number K of groups along the batch axis) must be a positive int. "
        f"Received: num_groups={num_groups!r}. "
        "Fix: pass an int >= 1; num_groups=1 is ordinary BatchNorm with batch statistics."
    )


def bad_batch_count(batch: Any, name: str = "batch") -> LocalNormError:
    return LocalNormError(
        f"{name} is N, the number of samples along the batch axis that the groups split, so "
        f"it must be an int >= 0. Received: {name}={batch!r}. Fix: pass the batch size, "
        "e.g. x.shape[0]."
    )


def bad_eps(eps: Any, dialect: Dialect = CORE) -> LocalNormError:
    name = dialect.eps
    return LocalNormError(
        f"{name} (added to the variance of each group along the batch axis before the square "
        f"root) must be a positive finite float. Received: {name}={eps!r}. "
        "Fix: use the default 1e-5 or another small positive value."
    )


def eps_underflows(eps: Any, minimum: float, dialect: Dialect = CORE) -> LocalNormError:
    name = dialect.eps
    return LocalNormError(
        f"{name} (added to the variance of each group along the batch axis before the square "
        f"root) is so small that it becomes 0 in the float32 statistics, and a constant "
        f"channel would then give 0/0 = NaN. Expected {name} >= {minimum:.7g} (float32's "
        f"smallest normal number). Received: {name}={eps!r}. "
        "Fix: use the default 1e-5 or another small value of at least 1e-30."
    )


#: What each choice selects, so an "unknown value" message says what the argument is for.
_CHOICE_MEANING = {
    "mode": "the layer mode: which samples share statistics ('batch': each of the K groups "
    "along the batch axis; 'single': each sample; 'set': the whole input)",
    "partition": "which samples form each group along the batch axis",
    "protocol": "the test-time protocol (how images meet the groups along the batch axis)",
    "vote": "how the predictions of the groups along the batch axis are combined",
    "method": "how the predictions of the groups along the batch axis are combined",
}


def bad_choice(name: str, value: Any, choices: Iterable[Any]) -> LocalNormError:
    meaning = _CHOICE_MEANING.get(name)
    what = f"{name} ({meaning})" if meaning else name
    return LocalNormError(
        f"Unknown {what}. Expected one of {listing(choices)}. Received: {name}={value!r}. "
        f"Fix: pass one of the listed values for {name}."
    )


def bad_group(group: Any, num_groups: int, allow_none: bool = False) -> LocalNormError:
    none = ", or group=None for a random group" if allow_none else ""
    return LocalNormError(
        f"group selects whose gamma/beta are used; it must be an int in [0, {num_groups - 1}] "
        f"({num_groups} group{'' if num_groups == 1 else 's'} along the batch axis), or in "
        "'single' mode an integer array "
        f"with one such entry per sample. Received: group={group!r}. "
        f"Fix: pass 0 <= group < {num_groups}{none}."
    )


def group_array_mismatch(length: int, batch: int) -> LocalNormError:
    return LocalNormError(
        "A per-sample group array needs one entry per sample along the batch axis. "
        f"Received: len(group)={length}, x.shape[0]={batch}. "
        "Fix: pass an int group, or an array of length x.shape[0]."
    )


def group_array_rank(shape: tuple, batch: int | None = None) -> LocalNormError:
    n = "N" if batch is None else str(batch)
    received = "" if batch is None else f", x.shape[0]={batch}"
    return LocalNormError(
        "A per-sample group array gives one group along the batch axis to each sample, so "
        f"it must be 1-D, of shape ({n},). Received: group.shape={tuple(shape)}{received}. "
        "Fix: flatten it (e.g. `group.reshape(-1)` for a column of shape (N, 1)), or pass "
        "an int group."
    )


def group_array_not_single(mode: str) -> LocalNormError:
    return LocalNormError(
        "A per-sample group array (one group along the batch axis for each sample) is only "
        "meaningful in 'single' mode, where every sample has its own statistics. "
        f"Received: mode={mode!r} with an array group. "
        "Fix: pass an int group, or use mode='single'."
    )


def group_not_used(protocol: str, group: Any) -> LocalNormError:
    return LocalNormError(
        "predict's group chooses the group along the batch axis whose gamma/beta each image "
        "uses in the SINGLE protocol; the other protocols use every group (BATCH each "
        "image's own group in its batch, the voting protocols all K in turn), so a group "
        f"there would be ignored. Received: protocol={protocol!r}, group={group!r}. Fix: "
        "leave group=None, or use protocol='single'."
    )


def empty_batch() -> LocalNormError:
    return LocalNormError(
        "LocalNorm got an empty batch; its statistics (per group along the batch axis, per "
        "sample or per set) need at least one sample. Expected x.shape[0] >= 1. "
        "Received: x.shape[0]=0. Fix: drop empty batches before calling the layer."
    )


def too_few_samples(batch: Any, num_groups: int, dialect: Dialect = CORE) -> LocalNormError:
    return LocalNormError(
        f"'batch' mode splits the batch into {num_groups} groups along the batch axis, so it "
        f"needs at least {num_groups} samples. Received: x.shape[0]={batch}, "
        f"num_groups={num_groups}. Fix, any of: (1) use a batch size of at least "
        f"{num_groups} (a multiple of it is best) and keep the last batch whole, e.g. "
        f"{dialect.batch_fix}; (2) build the layer with fewer groups; (3) evaluate small "
        "batches in 'single' or 'set' mode."
    )


def single_value_statistics(mode: str, values: Any, shape: tuple,
                            dialect: Dialect = CORE) -> LocalNormError:
    dense = "'set' or 'running' mode" if dialect.has_running else "'set' mode"
    return LocalNormError(
        f"In {mode!r} mode a statistics set of input shape {tuple(shape)} holds only "
        f"{values} value(s) per channel, so its variance is undefined. Received: "
        f"x.shape={tuple(shape)}, mode={mode!r}. Fix, any of: (1) in 'batch' mode use a "
        "batch of at least 2 samples per group along the batch axis (batch size >= "
        "2 * num_groups, and the last batch kept whole, e.g. "
        f"{dialect.batch_fix}); (2) in 'single' mode give inputs with spatial axes (a single "
        f"sample of a dense (N, C) layer has one value per channel: evaluate it with {dense} "
        "instead); (3) in 'set' mode pass at least 2 samples; (4) use fewer groups."
    )


def not_finite(name: str = "x", count: Any = None, size: Any = None,
               dialect: Dialect = CORE) -> LocalNormError:
    found = "non-finite values" if count is None else f"{count} non-finite of {size} values"
    return LocalNormError(
        f"{name} contains NaN or infinite values, which would poison the statistics of its "
        f"whole group along the batch axis. Expected finite values. Received: "
        f"{name} with {found}. "
        "Fix: clean the input (e.g. `nan_to_num`), or find where the NaN/Inf comes from; "
        f"to skip this check, {dialect.finite_off}."
    )


def mixed_namespaces(names: str) -> TypeError:
    return TypeError(
        "x, gamma and beta must come from one array library (one array-API namespace), "
        "the (K, C) gamma/beta holding one row per group along the batch axis. "
        f"Received: {names}. Fix: convert gamma and beta to x's array type first."
    )


def not_an_argument_array(name: str, value: Any) -> TypeError:
    fix = ("pass an array of that library, e.g. `np.asarray(x, dtype=np.float32)`"
           if name == "x" else "pass an array of x's library; for no scale or shift, ones "
           "or zeros of shape (K, C), e.g. `xp.ones((K, C))`")
    return TypeError(
        f"local_norm takes x, gamma and beta as arrays of one array library (NumPy, torch, "
        f"JAX, ...); gamma and beta are (K, C), one row per group along the batch axis. "
        f"Received: type({name})={type(value).__name__}. Fix: {fix}."
    )


def bad_scores(shape: tuple) -> LocalNormError:
    return LocalNormError(
        "vote() takes per-group scores of shape (K, N, classes): K groups along the batch "
        f"axis, N samples, one score per class. Received: scores.shape={tuple(shape)}. "
        "Fix: stack the per-group outputs on a new leading axis."
    )


def not_class_scores(shape: tuple, rows: int) -> LocalNormError:
    return LocalNormError(
        "The test-time protocols (predict) need a classifier: a model that returns class "
        f"scores of shape (N, classes), one row per image, to vote over the groups along "
        f"the batch axis and take labels. Received: an output of shape {tuple(shape)} for "
        f"{rows} images. Fix: end the model with a head that maps each image to one score "
        "per class (e.g. flatten and a linear layer), or call the model directly in an "
        "evaluation mode (set_eval_mode) for other outputs."
    )


def bad_scores_type(scores: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        "vote() takes per-group scores of shape (K, N, classes) (K groups along the batch "
        "axis) as an array or a nested list of numbers of that shape. "
        f"Received: type(scores)={type(scores).__name__} ({problem}). "
        "Fix: pass an array, e.g. `np.stack(per_group_scores)`."
    )


def scores_not_finite(count: int, from_logits: bool) -> LocalNormError:
    what = "NaN" if from_logits else "NaN or infinite"
    allowed = ("logits may be -inf or +inf (the limit of the softmax), never NaN"
               if from_logits else "probabilities must be finite; infinite logits are "
               "accepted with from_logits=True")
    return LocalNormError(
        f"vote() got {count} {what} score(s): a group with NaN scores has no top class, so "
        f"it cannot vote or count towards the agreement of the groups along the batch axis; "
        f"{allowed}. Received: {count} {what} value(s) in scores, from_logits={from_logits}. "
        "Fix: find where the NaN comes from (e.g. a network that diverged in training), or "
        "drop the affected samples before voting."
    )


def soft_vote_not_probabilities(low: float, high: float) -> LocalNormError:
    return LocalNormError(
        "Soft voting averages the class probabilities of the groups along the batch axis, "
        "but these scores are not probabilities (values outside [0, 1]); averaging logits "
        "would weight each group by its logit scale. Expected probabilities in [0, 1], or "
        f"logits with from_logits=True. Received: scores in [{low:g}, {high:g}], "
        "from_logits=False. Fix: pass from_logits=True for logits (a softmax is applied "
        "first), or vote on probabilities."
    )


def checkpoint_mismatch(name: str, received: tuple, expected: tuple, *,
                        shared: bool | None = None, num_groups: Any = None) -> LocalNormError:
    received, expected = tuple(received), tuple(expected)
    rows = "(num_groups along the batch axis, num_features)"
    fix = ("build the layer with the checkpoint's num_groups and num_features, or convert "
           "a BatchNorm checkpoint with convert_batchnorm()")
    if shared is not None and len(received) == 2 and len(expected) == 2 \
            and received[1] == expected[1] and (received[0] == 1) != (expected[0] == 1):
        # (K, C) against (1, C): per-group rows against one row shared by the groups.
        if shared:
            rows = ("(one row shared by all groups along the batch axis, num_features): "
                    f"this layer has shared_affine=True, the checkpoint one row per group "
                    f"({received[0]} groups)")
            fix = (f"build the layer with shared_affine=False and num_groups={received[0]} "
                   "to load per-group rows, or replace the checkpoint's rows by their mean "
                   "over axis 0 (keeping a leading axis of 1) if one shared row is what you "
                   "want")
        else:
            rows = ("(num_groups along the batch axis, num_features): this layer has one row "
                    f"per group ({num_groups} groups), the checkpoint one row shared by all "
                    "groups (saved with shared_affine=True, e.g. a Ghost BatchNorm)")
            fix = ("build the layer with shared_affine=True (or use the Ghost BatchNorm "
                   f"preset), or repeat the shared row {expected[0]} times along axis 0 to "
                   "give every group a copy")
    return LocalNormError(
        f"The checkpoint's {name} has shape {received} but this layer's has "
        f"{expected} {rows}. "
        f"Received: {name}.shape={received}, expected={expected}. "
        f"Fix: {fix}."
    )


def running_needs_shared(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} keeps running statistics only as one row shared by all groups along the "
        "batch axis (Ghost BatchNorm), not one row per group. Received: "
        "track_running_stats=True, shared_affine=False. Fix: pass shared_affine=True (or "
        "use the Ghost BatchNorm preset); LocalNorm's own protocols recompute statistics "
        "at test time and need no running statistics."
    )


def bad_momentum(momentum: Any, default: str, torch: bool = False) -> LocalNormError:
    rule = ("the weight of each new batch in the running statistics: running = "
            "(1 - momentum) * running + momentum * the batch's statistics, PyTorch's "
            "convention) must be a float in [0, 1], or None for a cumulative average"
            if torch else
            "how much of the running statistics each training step keeps: running = "
            "momentum * running + (1 - momentum) * the mean over the groups along the "
            "batch axis of their moments) must be a float in [0, 1]")
    return LocalNormError(
        f"momentum ({rule}. Received: momentum={momentum!r}. Fix: use the default "
        f"{default} or another value in [0, 1]."
    )


def bad_flag(name: str, value: Any) -> LocalNormError:
    return LocalNormError(
        f"{name} is an on/off option and must be True or False; other values are not read "
        f"for their truth value (the string 'False' would mean True). Received: "
        f"{name}={value!r} of type {type(value).__name__}. Fix: pass {name}=True or "
        f"{name}=False."
    )


def ghost_groups_missing() -> LocalNormError:
    return LocalNormError(
        "Ghost BatchNorm normalizes groups along the batch axis (virtual batches) and needs "
        "to know how to form them. Expected virtual_batch_size (samples per group; the "
        "number of groups is counted per batch) or num_groups (a fixed number of groups). "
        "Received: virtual_batch_size=None, num_groups=None. Fix: pass one of them, e.g. "
        "virtual_batch_size=32."
    )


def ghost_groups_both(num_groups: Any, virtual_batch_size: Any) -> LocalNormError:
    return LocalNormError(
        "The groups along the batch axis are given either by a virtual batch size (their "
        "number then follows each batch's size) or by a fixed number of groups, not both. "
        f"Received: num_groups={num_groups!r}, virtual_batch_size={virtual_batch_size!r}. "
        "Fix: pass only one of them (num_groups=None with virtual_batch_size)."
    )


def bad_virtual_batch_size(virtual_batch_size: Any) -> LocalNormError:
    return LocalNormError(
        "virtual_batch_size (how many samples form one group along the batch axis; a "
        "batch of N samples gets max(1, N // virtual_batch_size) groups) must be a "
        f"positive int. Received: virtual_batch_size={virtual_batch_size!r}. "
        "Fix: pass an int >= 1, e.g. virtual_batch_size=32, or None with num_groups."
    )


def virtual_batch_needs_shared(virtual_batch_size: Any) -> LocalNormError:
    return LocalNormError(
        "A virtual batch size makes the number of groups along the batch axis change with "
        "the batch size, so the groups cannot each own a row of scale/shift: it needs one "
        "scale/shift shared by all groups. Received: "
        f"virtual_batch_size={virtual_batch_size!r}, shared_affine=False. Fix: pass "
        "shared_affine=True (the Ghost BatchNorm presets do), or a fixed num_groups "
        "instead of virtual_batch_size."
    )


def bad_protocol_inputs(protocol: str, batch: int, needed: int, what: str) -> LocalNormError:
    if protocol == "batch":
        # batch_size cannot help: BATCH never makes a group of fewer images than exist.
        fix = (f"pass at least {needed} images in one call, or evaluate these {batch} with "
               "protocol='single', 'single-voting' or 'voting' (they take any number of "
               "images: per-image statistics, or one set shared by all groups)")
    else:
        fix = "pass more samples, or a smaller set_size"
    return LocalNormError(
        f"Protocol {protocol!r} (over the groups along the batch axis) needs {what}. "
        f"Received: x.shape[0]={batch}, needed at least {needed}. Fix: {fix}."
    )


def batch_size_below_groups(batch_size: int, num_groups: int) -> LocalNormError:
    return LocalNormError(
        "Protocol 'batch' evaluates chunks of batch_size test images, each split into the "
        f"K={num_groups} groups along the batch axis with their own statistics, so a chunk "
        f"needs at least K images. Received: batch_size={batch_size}, num_groups="
        f"{num_groups}. Fix: pass batch_size >= {num_groups} (the paper's test batch is the "
        "training batch size), or batch_size=None for the whole of x in one pass."
    )


def bad_noise_level(name: str, value: Any, valid: str,
                    problem: str = "it is out of range") -> LocalNormError:
    return LocalNormError(
        f"Noise level {name} is not valid: {problem}. Expected one real number {valid}. "
        f"Received: {name}={value!r} (type {type(value).__name__}). "
        f"Fix: pass {name} as a float {valid}, e.g. {name}=0.5."
    )


def not_an_array(name: str, value: Any) -> TypeError:
    return TypeError(
        f"{name} must be an array (NumPy, torch, JAX, ... or a nested list of floats) of "
        f"images, batch on axis 0. Received: type({name})={type(value).__name__}. "
        f"Fix: pass e.g. `np.asarray(images, dtype=np.float32)`."
    )


def no_localnorm_layers(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} found no LocalNorm layer in the model, so there is no mode or group (along "
        "the batch axis) to set. Received: a model without LocalNorm layers. Fix: convert "
        "its BatchNorm layers first, e.g. `model = convert_batchnorm(model, num_groups=4)`."
    )


def inconsistent_layers(attribute: str, values: Iterable[Any]) -> LocalNormError:
    return LocalNormError(
        f"The model's LocalNorm layers disagree on {attribute}, so a test-time protocol "
        f"cannot tile or vote over the groups along the batch axis consistently. Received: "
        f"{attribute} in {{{listing(sorted(set(values), key=repr))}}}. Fix: build every "
        f"LocalNorm layer of the model with the same {attribute}."
    )


def bad_num_features(num_features: Any) -> LocalNormError:
    return LocalNormError(
        "num_features (the number C of channels: one column of the (K, C) scale/bias each, "
        "one row per group along the batch axis) must be a "
        f"positive int. Received: num_features={num_features!r}. "
        "Fix: pass the size of the input's channel axis, e.g. the `out_features` of the "
        "layer before."
    )


def running_unsupported(where: str) -> LocalNormError:
    """'running' on a layer whose running statistics come only with Ghost BatchNorm
    (Keras, Flax), built without them."""
    track = (" or, for Ghost BatchNorm (one scale/shift shared by the groups along the batch "
             "axis), build the layer with shared_affine=True, track_running_stats=True (the "
             "GhostBatchNorm preset) and train it")
    return LocalNormError(
        f"{where} is stateless: it keeps no running statistics, so 'running' evaluation is "
        f"not available. Received: mode='running'. Fix: evaluate with 'batch' (statistics "
        "recomputed on the test batch, the paper's BATCH protocol), 'single' or 'set' "
        f"mode{track}."
    )


def bad_generator(generator: Any) -> LocalNormError:
    return LocalNormError(
        "generator is the seedable source of the random groups (along the batch axis) "
        "drawn when group=None. Expected None, an int seed >= 0, a numpy.random.Generator, "
        "or the framework's own generator (a torch.Generator in PyTorch, a JAX PRNG key in "
        f"Flax). Received: generator={generator!r} (type {type(generator).__name__}). "
        "Fix: pass e.g. generator=0 (an int seed draws the same groups in every framework)."
    )


_SIZE_MEANING = {
    "batch_size": "how many images one pass of a test-time protocol holds; for BATCH, the "
    "batch split into the groups along the batch axis",
    "set_size": "how many images form one VOTING set, whose statistics every group along "
    "the batch axis uses",
}


def bad_protocol_size(name: str, value: Any) -> LocalNormError:
    meaning = _SIZE_MEANING.get(name, "a number of images")
    return LocalNormError(
        f"{name} ({meaning}) must be a positive int. Received: {name}={value!r}. "
        f"Fix: pass an int >= 1, or {name}=None for the default."
    )


def bad_seed(seed: Any) -> LocalNormError:
    return LocalNormError(
        "seed is the source of the noise drawn for each image, so the same seed gives the "
        "same noise in every framework. Expected None, an int >= 0, a "
        "numpy.random.SeedSequence or a numpy.random.Generator. "
        f"Received: seed={seed!r} (type {type(seed).__name__}). "
        "Fix: pass e.g. seed=0 or seed=np.random.default_rng(0)."
    )


def running_not_tracked() -> LocalNormError:
    return LocalNormError(
        "'running' evaluation uses running statistics per group along the batch axis, but "
        "this layer does not track them. Received: mode='running', track_running_stats=False. Fix: build the "
        "layer with track_running_stats=True and train it, or evaluate with 'batch', "
        "'single' or 'set' mode."
    )
