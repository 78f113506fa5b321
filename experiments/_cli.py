"""The ``localnorm`` command line (also ``python -m localnorm``, a launcher in the core).

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

from localnorm._errors import LocalNormError

#: Modules that provide a subcommand, in the order ``--help`` lists them.
SUBCOMMANDS = (
    "localnorm.experiments.robustness",
    "localnorm.experiments.studies",
    "localnorm.experiments.bench",
    "localnorm.experiments.conformance",
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
    from localnorm import __version__

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

    A user's mistake or a damaged file never ends in a traceback; each is one message on
    stderr, ``localnorm COMMAND: error: ...`` (what is wrong, where, how to fix it):

    - bad input detected by localnorm (a :class:`~localnorm.LocalNormError`, bad options
      and damaged data files included): exit status 2, like argparse's own errors;
    - an operating-system error on a file or folder (:class:`OSError`: missing,
      permission denied, disk full, ...): exit status 1;
    - SIGINT (Ctrl-C): a line saying what was kept and the command that resumes
      (``--resume`` added), exit status 130 (128 + SIGINT), as shells report it.

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
    except OSError as exc:
        print(f"localnorm {args.command}: error: {file_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"localnorm {args.command}: interrupted. {_resume_hint(args, argv)}",
              file=sys.stderr)
        return 130


def file_error(exc: OSError) -> LocalNormError:
    path = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or type(exc).__name__
    return LocalNormError(
        f"Cannot access {str(path)!r}: {reason} ({type(exc).__name__}). Expected a path this "
        f"user can read (data) or write (--out). Received: path={str(path)!r}. Fix: check "
        "the path, its permissions and the free disk space, then run again (with --resume "
        "to keep the cells already computed)."
    )


def _resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """What an interrupted subcommand kept, and the command line that continues it."""
    import shlex

    if not hasattr(args, "resume") or getattr(args, "out", None) is None:
        return "Run the command again to start over."
    again = argv if "--resume" in argv else [*argv, "--resume"]
    return (f"The cells finished so far are kept in {args.out}/results.json (and trained "
            f"networks in {args.out}/checkpoints). Resume with: localnorm {shlex.join(again)}")
