"""Every error message localnorm raises, in one place.

Each builder returns an exception (the caller raises it) whose text says what is wrong,
what was expected, ``Received: name=value``, and how to fix it. The core and all
adapters (torch, keras, flax) raise through these builders, so one input error reads the
same in every framework. Tests check the meaning (the values named, the remedy), not the
exact wording.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LocalNormError",
]

_GROUPS_ARE = "groups are taken along the batch axis (axis 0), not over channels as in GroupNorm"


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

TORCH = Dialect(
    eps="eps",
    channels_fix="build the layer with num_features={received}",
    rank_fix="add the missing batch/channel axes (a single image still needs a batch axis "
    "of size 1), or use the class that matches the rank: LocalNorm1d for (N, C) and "
    "(N, C, L), LocalNorm2d for (N, C, H, W), LocalNorm3d for (N, C, D, H, W), or LocalNorm "
    "for any rank >= 2",
    cast="`x.float()`",
    batch_fix="`DataLoader(..., drop_last=True)`",
    has_running=True,
    finite_off="set `layer.check_finite = False` (or pass check_finite=False to predict)",
)

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


def _choices(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values)


def not_floating(dtype: Any, dialect: Dialect = CORE) -> TypeError:
    return TypeError(
        "LocalNorm normalizes real floating-point input (its statistics over the groups "
        "along the batch axis are means and variances), but x has a non-floating dtype. "
        f"Expected a float16, bfloat16, float32 or float64 x. Received: x.dtype={dtype}. "
        f"Fix: cast the input first, e.g. {dialect.cast}."
    )


def bad_rank(ndim: int, expected: str, where: str = "local_norm",
             dialect: Dialect = CORE) -> LocalNormError:
    return LocalNormError(
        f"{where} expected input of rank {expected} (the batch axis 0, along which the "
        f"groups are taken, then channels and optional spatial axes). Received: x.ndim={ndim}. "
        f"Fix: {dialect.rank_fix}."
    )


def bad_axis(axis: int, ndim: int) -> LocalNormError:
    return LocalNormError(
        "The channel axis must be one of the non-batch axes of x (axis 0 is the batch axis, "
        f"along which the groups are taken). Received: axis={axis} for x.ndim={ndim}. "
        f"Fix: pass axis in [1, {ndim - 1}] or [-{ndim - 1}, -1]."
    )


def bad_channels(received: int, expected: int, name: str = "num_features",
                 dialect: Dialect = TORCH) -> LocalNormError:
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
        f"Unknown {what}. Expected one of {_choices(choices)}. Received: {name}={value!r}. "
        f"Fix: pass one of the listed values for {name}."
    )


def bad_group(group: Any, num_groups: int, allow_none: bool = False) -> LocalNormError:
    none = ", or group=None for a random group" if allow_none else ""
    return LocalNormError(
        f"group selects whose gamma/beta are used; it must be an int in [0, {num_groups - 1}] "
        f"({num_groups} groups along the batch axis), or in 'single' mode an integer array "
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


def bad_scores(shape: tuple) -> LocalNormError:
    return LocalNormError(
        "vote() takes per-group scores of shape (K, N, classes): K groups along the batch "
        f"axis, N samples, one score per class. Received: scores.shape={tuple(shape)}. "
        "Fix: stack the per-group outputs on a new leading axis."
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


def bad_momentum(momentum: Any, default: str) -> LocalNormError:
    return LocalNormError(
        "momentum (how much of the running statistics each training step keeps: "
        "running = momentum * running + (1 - momentum) * the mean over the groups along "
        "the batch axis of their moments) must be a float in [0, 1]. "
        f"Received: momentum={momentum!r}. Fix: use the default {default} or another value "
        "in [0, 1]."
    )


def virtual_batch_unknown_size(where: str, virtual_batch_size: int) -> LocalNormError:
    return LocalNormError(
        f"{where} counts its groups along the batch axis from each batch's size "
        f"(virtual_batch_size={virtual_batch_size}), but this batch size is only known at "
        "run time (a traced function with a None batch axis). Received: batch size None. "
        "Fix: give the model batches of a known size (e.g. `model.fit(..., "
        "batch_size=...)` with `drop_remainder=True` datasets), or build the layer with a "
        "fixed num_groups instead of virtual_batch_size."
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


def running_not_tracked() -> LocalNormError:
    return LocalNormError(
        "'running' evaluation uses running statistics per group along the batch axis, but "
        "this layer does not track them. Received: mode='running', track_running_stats=False. Fix: build the "
        "layer with track_running_stats=True and train it, or evaluate with 'batch', "
        "'single' or 'set' mode."
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
        f"{attribute} in {{{_choices(sorted(set(values), key=repr))}}}. Fix: build every "
        f"LocalNorm layer of the model with the same {attribute}."
    )


def not_distributed(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} needs the rank of this process, but torch.distributed is not initialized "
        "and no rank was given. Received: rank=None. Fix: call "
        "`torch.distributed.init_process_group(...)` first (torchrun does this setup for "
        "you), or pass rank=... explicitly."
    )


# -- the robustness experiment (localnorm.experiments, `localnorm robustness`) ----------

def dataset_files_missing(dataset: str, data_dir: Any, expected: str) -> LocalNormError:
    return LocalNormError(
        f"Could not find the files of dataset {dataset!r}; nothing is ever downloaded. "
        f"Expected {expected}. Received: dataset={dataset!r}, "
        f"data_dir={None if data_dir is None else str(data_dir)!r}. "
        "Fix: pass --data-dir pointing at a folder with those files, or use "
        "--dataset digits (embedded in scikit-learn, needs no files)."
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


def adapter_missing(method: str, backend: str, module: str) -> LocalNormError:
    return LocalNormError(
        f"Method {method!r} needs the LocalNorm layers of {module}, which this installation "
        f"does not provide. Received: method={method!r}, backend={backend!r}. Fix: install "
        f"localnorm with the [{backend}] extra, or leave {method!r} out of --methods."
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


def bad_num_features(num_features: Any) -> LocalNormError:
    return LocalNormError(
        "num_features (the number C of channels: one column of the (K, C) scale/bias each, "
        "one row per group along the batch axis) must be a "
        f"positive int. Received: num_features={num_features!r}. "
        "Fix: pass the size of the input's channel axis, e.g. the `out_features` of the "
        "layer before."
    )


def running_unsupported(where: str, trackable: bool = False) -> LocalNormError:
    track = (" or, for Ghost BatchNorm (one scale/shift shared by the groups along the batch "
             "axis), build the layer with shared_affine=True, track_running_stats=True (the "
             "GhostBatchNorm preset) and train it") if trackable else ""
    return LocalNormError(
        f"{where} is stateless: it keeps no running statistics, so 'running' evaluation is "
        f"not available. Received: mode='running'. Fix: evaluate with 'batch' (statistics "
        "recomputed on the test batch, the paper's BATCH protocol), 'single' or 'set' "
        f"mode{track}."
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


def bench_suite_missing(path: str) -> LocalNormError:
    return LocalNormError(
        "`localnorm bench` runs the benchmark suite of a source checkout, which is not part "
        f"of the installed package. Received: no benchmarks suite at {path}. Fix: clone the "
        "localnorm repository and install it editable (`pip install -e .`), then run "
        "`localnorm bench` again."
    )


def bad_generator(generator: Any) -> LocalNormError:
    return LocalNormError(
        "generator is the seedable source of the random groups (along the batch axis) "
        "drawn when group=None. Expected None, an int seed, a numpy.random.Generator or a "
        f"JAX PRNG key. Received: type(generator)={type(generator).__name__}. "
        "Fix: pass e.g. generator=0 or generator=jax.random.key(0)."
    )


def mask_unsupported(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} computes its statistics over every element of each group along the batch "
        "axis and cannot leave masked entries out. Received: a non-None mask. Fix: drop "
        "the mask before this layer, or normalize masked sequences with another layer."
    )


# -- the robustness CLI: backends, --confusion, --device (localnorm.experiments) ---------

def backend_not_installed(backend: str, module: str, extra: str) -> LocalNormError:
    return LocalNormError(
        f"--backend {backend} trains and evaluates the networks with {module}, which is not "
        f"installed. Received: backend={backend!r}. Fix: pip install \"localnorm[{extra},"
        "experiments]\", or choose an installed backend (--backend torch, keras or flax)."
    )


def bad_confusion(spec: Any, problem: str) -> LocalNormError:
    return LocalNormError(
        f"--confusion names the noise cell of the confusion-matrix figure, which must be "
        f"evaluated in this run: {problem}. Received: confusion={spec!r}. Fix: pass "
        "NOISE=LEVEL with a NOISE of --noises and a LEVEL of its --levels (e.g. "
        "--confusion agn=1), or --confusion none for no figure."
    )


def device_unavailable(device: str, backend: str, available: Iterable[str]) -> LocalNormError:
    return LocalNormError(
        f"--backend {backend} has no device {device!r} here. Expected one of "
        f"{_choices(available)}. Received: device={device!r}. Fix: pass --device auto (the "
        f"framework's default device) or one of those; for a GPU, install the CUDA build of "
        f"{backend}."
    )


# -- the CLI's hostile input: options, files, output folders (issue 16) ------------------

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


def file_error(exc: OSError) -> LocalNormError:
    path = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or type(exc).__name__
    return LocalNormError(
        f"Cannot access {str(path)!r}: {reason} ({type(exc).__name__}). Expected a path this "
        f"user can read (data) or write (--out). Received: path={str(path)!r}. Fix: check "
        "the path, its permissions and the free disk space, then run again (with --resume "
        "to keep the cells already computed)."
    )


# -- core: protocols and noise (localnorm.protocols, localnorm.noise) ----------------------

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


# -- flax adapter (localnorm.flax) -------------------------------------------------------

#: Linen layers infer C from the input when their variables are created, so a channel
#: mismatch is fixed by new variables, not by a constructor argument.
FLAX_LINEN = Dialect(
    eps=FLAX.eps,
    channels_fix="initialize variables for inputs with {received} channels "
    "(`variables = layer.init(key, x)`; a Linen layer fixes C when its variables are "
    "created)",
    rank_fix=FLAX.rank_fix,
    cast=FLAX.cast,
    batch_fix=FLAX.batch_fix,
    has_running=FLAX.has_running,
    finite_off=FLAX.finite_off,
)


def bad_channel_axis(axis: Any) -> LocalNormError:
    return LocalNormError(
        "axis is the one channel axis of the input: a single int other than 0 (axis 0 is "
        "the batch axis, along which the groups are taken); negative values count from the "
        f"end. Received: axis={axis!r}. Fix: pass one int, e.g. axis=-1 for channels-last "
        "input (Flax's layout) or axis=1 for channels-first."
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


# -- torch adapter (localnorm.torch) -------------------------------------------------------

def lazy_batchnorm(kind: str) -> LocalNormError:
    return LocalNormError(
        f"convert_batchnorm() found an uninitialized {kind}: its number of channels is only "
        "known after its first forward pass, so the (K, C) weight/bias of the LocalNorm "
        "that replaces it (one row per group along the batch axis) cannot be built yet. "
        f"Received: an {kind} with uninitialized parameters. Fix: run one forward pass "
        "first (e.g. `model(example_batch)`), then call convert_batchnorm(model, ...)."
    )


# -- experiments: CIFAR-10 networks, studies ------------------------------------------------

def image_too_small(model: str, shape: tuple, minimum: int) -> LocalNormError:
    return LocalNormError(
        f"--model {model} halves the image size five times (a 2x2 max-pool after each of "
        f"its five stages), so it needs images of at least {minimum}x{minimum} pixels. "
        f"Received: model={model!r}, image shape (C, H, W)={tuple(shape)}. Fix: use "
        "--model resnet or mnistnet for smaller images, or --dataset folder --image-size 32."
    )


def model_not_in_backend(model: str, backend: str, available: Iterable[str]) -> LocalNormError:
    return LocalNormError(
        f"The {backend} backend of the robustness experiment does not build --model {model}. "
        f"Expected one of {_choices(available)}. Received: model={model!r}, "
        f"backend={backend!r}. Fix: pass --backend torch for {model}, or choose one of "
        "those models."
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
