"""The PyTorch adapter's error messages: its dialect (how the core's messages name
PyTorch's arguments and remedies) and the messages of its own features (running
statistics, BatchNorm conversion, group-per-rank training). The template and the core's
messages are in :mod:`localnorm._errors`."""

from __future__ import annotations

from localnorm._errors import Dialect, LocalNormError

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
    torch_momentum=True,
    momentum_default="0.1",
)


def not_distributed(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} needs the rank of this process, but torch.distributed is not initialized "
        "and no rank was given. Received: rank=None. Fix: call "
        "`torch.distributed.init_process_group(...)` first (torchrun does this setup for "
        "you), or pass rank=... explicitly."
    )


def lazy_batchnorm(kind: str) -> LocalNormError:
    return LocalNormError(
        f"convert_batchnorm() found an uninitialized {kind}: its number of channels is only "
        "known after its first forward pass, so the (K, C) weight/bias of the LocalNorm "
        "that replaces it (one row per group along the batch axis) cannot be built yet. "
        f"Received: an {kind} with uninitialized parameters. Fix: run one forward pass "
        "first (e.g. `model(example_batch)`), then call convert_batchnorm(model, ...)."
    )


def not_a_module(where: str, value: object) -> LocalNormError:
    return LocalNormError(
        f"{where} takes a torch.nn.Module (a model, or one BatchNorm layer) whose BatchNorm "
        f"layers it replaces with LocalNorm (groups along the batch axis). Received: "
        f"type(module)={type(value).__name__}. Fix: pass the model object itself, e.g. "
        f"`{where}(torchvision.models.resnet18(), num_groups=4)`."
    )


def bad_process_rank(rank: object) -> LocalNormError:
    return LocalNormError(
        "set_group_per_rank's rank is this process's rank, a non-negative int: its layers "
        "train the group along the batch axis number rank % num_groups. Received: "
        f"rank={rank!r}. Fix: pass rank=torch.distributed.get_rank(), or leave rank=None "
        "to read it from an initialized torch.distributed."
    )


def bad_layer_generator(where: str, generator: object) -> LocalNormError:
    return LocalNormError(
        f"{where}'s generator is the seedable source of the random groups (along the batch "
        "axis) that the layers draw with torch.randint at every call when group=None. "
        "Expected None or a torch.Generator. Received: "
        f"type(generator)={type(generator).__name__}. Fix: pass "
        "generator=torch.Generator().manual_seed(0) (predict, which draws its groups once, "
        "also takes an int seed or a numpy.random.Generator)."
    )


def not_a_tensor(where: str, x: object) -> TypeError:
    return TypeError(
        f"{where} normalizes a torch.Tensor of floats, batch on axis 0. Received: "
        f"type(x)={type(x).__name__}. Fix: convert it first, e.g. "
        "`torch.as_tensor(x, dtype=torch.float32)`."
    )


def not_scriptable(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} cannot be compiled by torch.jit.script: its math is localnorm's Python "
        "code, written once for every framework, which TorchScript's compiler does not "
        f"accept. Received: torch.jit.script of a module holding a {where}. Fix: trace it "
        "instead, `torch.jit.trace(model, example_input)` (the traced graph takes other "
        "batch sizes too), or use torch.compile, torch.export or torch.onnx.export."
    )


def unmapped_running_stats(where: str) -> LocalNormError:
    return LocalNormError(
        f"{where} updates its running statistics in place in training, but torch.func.vmap "
        "maps the input and not the running_mean/running_var buffers, so each mapped batch "
        "would write into the one shared buffer. Received: a vmapped x with unmapped "
        "running statistics (track_running_stats=True, in training). Fix: map the buffers "
        "too, e.g. `params, buffers = torch.func.stack_module_state(models)` then "
        "`vmap(lambda p, b, x: functional_call(model, (p, b), (x,)))(params, buffers, xs)`; "
        "or call the model in evaluation (`model.eval()`), or build the layer with "
        "track_running_stats=False."
    )
