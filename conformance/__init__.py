"""The localnorm conformance suite: every backend held to the NumPy reference.

See :mod:`conformance.harness` (what a subject implements), :mod:`conformance.subjects`
(the registry), :mod:`conformance.strategies` (the generated cases) and
:mod:`conformance.tolerances` (the one dtype table).
"""
