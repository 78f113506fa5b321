"""The reference itself as a harness, so the battery's invariants check the oracle too
(test_reference.py). Not a subject: it is what subjects are compared with."""

from __future__ import annotations

import numpy as np

from localnorm import reference
from .. import tolerances
from ..harness import Case, Harness
from ..strategies import as_dtype


class ReferenceHarness(Harness):
    name = "reference"
    dtypes = ("float64",)

    def forward(self, case: Case) -> np.ndarray:
        y = reference.local_norm(tolerances.x64(case.x), case.gamma, case.beta,
                                 **case.reference_kwargs())
        return as_dtype(y, case.dtype)
