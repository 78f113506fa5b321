"""Command-line entry point (``localnorm`` / ``python -m localnorm``)."""

from __future__ import annotations


def main(argv=None) -> int:
    from ._cli import main as _main

    return _main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
