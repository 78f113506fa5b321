"""Re-run one failing conformance check from its saved case.

Usage::

    python -m conformance.repro .conformance-failures/<id>.npz --subject <name>

Every failure of the battery prints this command. It loads the case (x, gamma, beta and
the options, bit for bit), loads the subject, runs the same check and prints the result;
exit status 1 when the check still fails.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from . import checks, subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.repro", description=__doc__.split("\n")[1])
    parser.add_argument("path", help="the .npz file the failing test saved")
    parser.add_argument("--subject", help="subject to run (default: the one that failed)")
    args = parser.parse_args(argv)
    check_name, failed_subject, case, extra = checks.load(args.path)
    name = args.subject or failed_subject
    try:
        harness = subjects.load(name)
    except subjects.SubjectUnavailable as exc:
        print(f"subject unavailable: {exc}")
        return 2
    print(f"check={check_name} subject={name} dtype={case.dtype} shape={case.x.shape} "
          f"axis={case.axis} mode={case.mode!r} group={case.group!r} "
          f"partition={case.partition!r} K={case.num_groups} eps={case.eps} extra={sorted(extra)}")
    try:
        checks.CHECKS[check_name](harness, case, **extra)
    except Exception:  # noqa: BLE001 - report whatever the check raised
        traceback.print_exc()
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
