"""The ``localnorm`` command line (also ``python -m localnorm``).

Subcommands live in their own modules and register themselves: a module listed in
:data:`SUBCOMMANDS` exposes ``add_parser(subparsers)``, which adds its parser with
``subparsers.add_parser(...)`` and sets ``func`` (called with the parsed namespace, returning
an exit status) through ``set_defaults``. Those modules import only :mod:`argparse` at
module level, so ``localnorm --help`` stays fast; heavy imports (torch, matplotlib) happen
inside ``func``. A listed module that is not installed yet is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._errors import LocalNormError

#: Modules that provide a subcommand, in the order ``--help`` lists them.
SUBCOMMANDS = (
    "localnorm.experiments.robustness",
    "localnorm.experiments.studies",
    "localnorm.experiments.bench",
)


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # the subcommand's module itself is absent
            return None
        raise


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands of ``modules`` (default
    :data:`SUBCOMMANDS`) registered."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="localnorm",
        description="LocalNorm (BatchNorm with K groups along the batch axis): experiments "
        "and tools.",
    )
    parser.add_argument("--version", action="version", version=f"localnorm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS if modules is None else modules:
        module = _load(name)
        if module is not None:
            module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its status.

    Bad input detected by localnorm (a :class:`~localnorm.LocalNormError`) is printed as
    ``localnorm: error: ...`` on stderr with exit status 2, like argparse's own errors.
    The subcommand's namespace carries the arguments as ``argv`` (a list, without the
    program name), so a run can record how it was invoked.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for subcommands that record it (results.json)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except LocalNormError as exc:
        print(f"localnorm {args.command}: error: {exc}", file=sys.stderr)
        return 2
