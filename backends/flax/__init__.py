"""localnorm.flax: LocalNorm for Flax (NNX, and Linen in :mod:`localnorm.flax.linen`).

:class:`LocalNorm` is BatchNorm with K groups along the batch axis (the math is
:func:`localnorm.local_norm`, ``docs/spec.md``); it is stateless, works under
``jax.jit``, ``jax.grad``, ``nnx.jit`` and ``jax.vmap``, and shards one group (or a fixed
set of groups) per device with ``axis_name`` inside ``jax.shard_map``. Model-level
evaluation: :func:`set_eval_mode`, :func:`eval_mode`, :func:`predict`;
:func:`convert_batchnorm` turns ``nnx.BatchNorm`` layers into LocalNorm (or, with
``ghost=True``, into the Ghost BatchNorm preset :class:`GhostBatchNorm`).
"""

from . import linen as linen
from ._layers import GhostBatchNorm as GhostBatchNorm
from ._layers import LocalNorm as LocalNorm
from ._model import convert_batchnorm as convert_batchnorm
from ._model import eval_mode as eval_mode
from ._model import localnorm_layers as localnorm_layers
from ._model import predict as predict
from ._model import set_eval_mode as set_eval_mode

__all__ = [
    "GhostBatchNorm",
    "LocalNorm",
    "convert_batchnorm",
    "eval_mode",
    "localnorm_layers",
    "predict",
    "set_eval_mode",
]
