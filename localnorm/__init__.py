"""localnorm: LocalNorm, BatchNorm with K groups along the batch axis.

The backend-neutral core. ``import localnorm`` imports NumPy and array-api-compat only;
the framework adapters are ``localnorm.torch``, ``localnorm.keras`` and ``localnorm.flax``
(install the matching extra). The math is specified in ``docs/spec.md`` and implemented
once in :func:`local_norm`; :mod:`localnorm.reference` is the NumPy float64 oracle.
"""

from . import noise as noise
from . import protocols as protocols
from . import reference as reference
from ._core import local_norm as local_norm
from ._errors import LocalNormError as LocalNormError
from ._spec import DEFAULT_EPS as DEFAULT_EPS
from ._spec import MODES as MODES
from ._spec import PARTITIONS as PARTITIONS
from ._spec import PROTOCOLS as PROTOCOLS
from ._spec import group_index as group_index
from ._spec import group_sizes as group_sizes
from ._voting import Vote as Vote
from ._voting import vote as vote
from .protocols import Prediction as Prediction

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EPS",
    "MODES",
    "PARTITIONS",
    "PROTOCOLS",
    "LocalNormError",
    "Prediction",
    "Vote",
    "group_index",
    "group_sizes",
    "local_norm",
    "noise",
    "protocols",
    "reference",
    "vote",
]
