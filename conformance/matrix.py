"""What each conformance subject supports, from its harness declarations, as markdown.

:func:`support_matrix` is rendered on the Conformance page of the docs. A subject that
cannot be imported here is listed with the reason (its declarations are unknown).
"""

from __future__ import annotations

from . import subjects
from .harness import Harness


def _axes(h: Harness) -> str:
    if h.channel_axes is None:
        return "any"
    return ", ".join(str(a) for a in h.channel_axes)


def _row(name: str, h: Harness) -> list[str]:
    groups = "int, per-sample array" if h.group_arrays else "int"
    return [
        f"`{name}`",
        ", ".join(h.dtypes),
        ", ".join(h.modes),
        ", ".join(h.partitions),
        _axes(h),
        ", ".join(str(r) for r in h.ranks),
        groups,
        "yes" if h.grads else "no",
    ]


def support_matrix(names: list[str] | None = None) -> str:
    """A markdown table: for each subject, the dtypes, modes, partitions, channel axes,
    ranks, group kinds and gradients its harness declares (what the battery runs on it).

    Parameters
    ----------
    names : list of str, optional
        Subjects to list (default: all registered, in registry order).
    """
    header = ["subject", "dtypes", "modes", "partitions", "channel axis", "ranks",
              "groups", "gradients"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    unavailable = []
    for name in names if names is not None else list(subjects.SUBJECTS):
        try:
            h = subjects.load(name)
        except subjects.SubjectUnavailable as exc:
            unavailable.append(f"- `{name}`: not available here ({exc})")
            continue
        lines.append("| " + " | ".join(_row(name, h)) + " |")
    if unavailable:
        lines += ["", *unavailable]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(support_matrix())
