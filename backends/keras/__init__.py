"""localnorm.keras: LocalNorm for Keras 3, on the TensorFlow, JAX and PyTorch backends.

:class:`LocalNormalization` is BatchNorm with ``num_groups`` groups along the batch axis
(the math: :func:`localnorm.local_norm`, specified in ``docs/spec.md``).
:func:`set_eval_mode` / :func:`eval_mode` choose what the layers do at test time,
:func:`predict` runs the paper's test-time protocols, and :func:`convert_batchnorm` turns a
BatchNormalization model into a LocalNorm one (or, with ``ghost=True``, into
:class:`GhostBatchNormalization`, Ghost BatchNorm: one gamma/beta shared by the groups). Guide: ``docs/guides/keras.md``.
"""

from ._layers import GhostBatchNormalization as GhostBatchNormalization
from ._layers import LocalNormalization as LocalNormalization
from ._model import convert_batchnorm as convert_batchnorm
from ._model import eval_mode as eval_mode
from ._model import localnorm_layers as localnorm_layers
from ._model import predict as predict
from ._model import set_eval_mode as set_eval_mode

__all__ = [
    "GhostBatchNormalization",
    "LocalNormalization",
    "convert_batchnorm",
    "eval_mode",
    "localnorm_layers",
    "predict",
    "set_eval_mode",
]
