"""localnorm.torch: LocalNorm for PyTorch.

Layers :class:`LocalNorm1d`, :class:`LocalNorm2d`, :class:`LocalNorm3d` and the
rank-agnostic :class:`LocalNorm` (BatchNorm with K groups along the batch axis; the math
is :func:`localnorm.local_norm`, see ``docs/spec.md``), a model-wide evaluation switch (:func:`set_eval_mode`,
:func:`eval_mode`), the paper's test-time protocols (:func:`predict`), BatchNorm
conversion (:func:`convert_batchnorm`), the Ghost BatchNorm presets
(:class:`GhostBatchNorm1d`, :class:`GhostBatchNorm2d`, :class:`GhostBatchNorm3d`) and group-per-rank distributed training
(:func:`set_group_per_rank`). Guide: ``docs/guides/torch.md``.
"""

from ._model import convert_batchnorm as convert_batchnorm
from ._model import eval_mode as eval_mode
from ._model import local_norm_layers as local_norm_layers
from ._model import localnorm_layers as localnorm_layers
from ._model import predict as predict
from ._model import set_eval_mode as set_eval_mode
from ._model import set_group_per_rank as set_group_per_rank
from ._layers import EVAL_MODES as EVAL_MODES
from ._layers import GhostBatchNorm1d as GhostBatchNorm1d
from ._layers import GhostBatchNorm2d as GhostBatchNorm2d
from ._layers import GhostBatchNorm3d as GhostBatchNorm3d
from ._layers import LocalNorm as LocalNorm
from ._layers import LocalNorm1d as LocalNorm1d
from ._layers import LocalNorm2d as LocalNorm2d
from ._layers import LocalNorm3d as LocalNorm3d

__all__ = [
    "EVAL_MODES",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GhostBatchNorm3d",
    "LocalNorm",
    "LocalNorm1d",
    "LocalNorm2d",
    "LocalNorm3d",
    "convert_batchnorm",
    "eval_mode",
    "localnorm_layers",
    "predict",
    "set_eval_mode",
    "set_group_per_rank",
]
