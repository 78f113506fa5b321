"""Draw the diagrams of docs/concepts.md (committed with their SVG outputs).

Run from the repository root after changing a figure::

    python docs/figures/make_figures.py            # into docs/figures/
    python docs/figures/make_figures.py OUT_DIR    # elsewhere (tests/docs checks it runs)

Each figure shows a batch as a row of squares (one per sample, along the batch axis).
Colour = the group whose gamma_k/beta_k a sample uses; a black outline = samples that share
one set of statistics. The output is deterministic (no dates, fixed SVG ids), so
regenerating an unchanged figure gives an unchanged file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import localnorm  # noqa: E402

OUT = Path(__file__).resolve().parent
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")
plt.rcParams.update({"svg.hashsalt": "localnorm", "font.size": 10, "font.family": "DejaVu Sans"})


def samples(ax, y, groups, *, labels=None, x0=0.0, size=0.8, gap=0.15, alpha=1.0):
    """Draw one square per sample at height y, coloured by its group; return x positions."""
    xs = []
    for i, g in enumerate(groups):
        x = x0 + i * (size + gap)
        ax.add_patch(Rectangle((x, y), size, size, color=COLORS[int(g) % len(COLORS)],
                               alpha=alpha, lw=0))
        if labels is not None:
            ax.text(x + size / 2, y + size / 2, labels[i], ha="center", va="center",
                    color="white", fontsize=8, fontweight="bold")
        xs.append(x)
    return xs


def outline(ax, xs, y, i, j, *, size=0.8, pad=0.07):
    """A black box around samples i..j-1 (one statistics set)."""
    left, right = xs[i] - pad, xs[j - 1] + size + pad
    ax.add_patch(Rectangle((left, y - pad), right - left, size + 2 * pad, fill=False,
                           lw=1.6, ec="black"))


def finish(fig, ax, name, width, height):
    ax.set_xlim(-0.3, width)
    ax.set_ylim(-0.4, height)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(OUT / name, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def legend(ax, k, x, y):
    for g in range(k):
        ax.add_patch(Rectangle((x + g * 1.9, y), 0.45, 0.45, color=COLORS[g], lw=0))
        ax.text(x + g * 1.9 + 0.6, y + 0.22, f"group {g}", va="center", fontsize=8)


def partitions():
    """Contiguous vs strided partitions, for N = 8 and a ragged N = 10, with K = 4."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    rows = [("contiguous, N=8", 8, "contiguous"), ("strided, N=8", 8, "strided"),
            ("contiguous, N=10 (ragged)", 10, "contiguous"), ("strided, N=10 (ragged)", 10, "strided")]
    for r, (title, n, partition) in enumerate(rows):
        y = (len(rows) - 1 - r) * 1.3
        gidx = localnorm.group_index(n, 4, partition)
        xs = samples(ax, y, gidx, labels=[str(i) for i in range(n)], x0=5.4)
        ax.text(0, y + 0.4, title, va="center")
        for k in range(4):
            members = [i for i in range(n) if gidx[i] == k]
            if partition == "contiguous":
                outline(ax, xs, y, members[0], members[-1] + 1)
    legend(ax, 4, 5.4, -0.9)
    ax.text(5.4, 5.3, "samples along the batch axis (number = sample index); colour = group;"
            " box (contiguous) or colour (strided) = shared statistics", fontsize=8)
    finish(fig, ax, "partitions.svg", 15.5, 5.6)


def modes():
    """Which samples share statistics, and whose gamma/beta they use, in each layer mode."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    n, k = 8, 4
    rows = [
        ('"batch": K groups, own statistics, own gamma_k/beta_k', localnorm.group_index(n, k),
         [(2 * g, 2 * g + 2) for g in range(k)]),
        ('"single", group=2: each sample alone, gamma_2/beta_2', [2] * n,
         [(i, i + 1) for i in range(n)]),
        ('"set", group=1: one statistics set, gamma_1/beta_1', [1] * n, [(0, n)]),
    ]
    for r, (title, groups, sets) in enumerate(rows):
        y = (len(rows) - 1 - r) * 1.5
        xs = samples(ax, y, groups, x0=0)
        for i, j in sets:
            outline(ax, xs, y, i, j)
        ax.text(8 * 0.95 + 0.3, y + 0.4, title, va="center")
    legend(ax, 4, 0, -1.0)
    finish(fig, ax, "modes.svg", 17.5, 4)


def protocols():
    """The four test-time protocols on N = 8 test images with K = 4 groups."""
    fig, ax = plt.subplots(figsize=(8.5, 6.4))
    k = 4
    y = 11.0
    ax.text(0, y, "BATCH: one pass in \"batch\" mode over the test batch", fontweight="bold")
    xs = samples(ax, y - 1.2, localnorm.group_index(8, k), labels=list("abcdefgh"))
    for g in range(k):
        outline(ax, xs, y - 1.2, 2 * g, 2 * g + 2)

    y = 8.2
    ax.text(0, y, "SINGLE: each image alone (\"single\"), one group each (given or random)",
            fontweight="bold")
    xs = samples(ax, y - 1.2, [1, 3, 0, 0, 2, 1, 3, 2], labels=list("abcdefgh"))
    for i in range(8):
        outline(ax, xs, y - 1.2, i, i + 1)

    y = 5.4
    ax.text(0, y, "SINGLE-VOTING: each image through all K groups (\"single\"), then vote",
            fontweight="bold")
    tiled = [g for g in range(k) for _ in range(2)]
    xs = samples(ax, y - 1.2, tiled, labels=list("ab") * k)
    for i in range(2 * k):
        outline(ax, xs, y - 1.2, i, i + 1)
    ax.text(xs[-1] + 1.3, y - 0.8, "vote over the K copies of a, of b", va="center", fontsize=8)

    y = 2.6
    ax.text(0, y, "VOTING: a set of N/K images through every group (\"set\" = set tiled K times"
            " in \"batch\"), then vote", fontweight="bold")
    xs = samples(ax, y - 1.2, tiled, labels=list("ab") * k)
    for g in range(k):
        outline(ax, xs, y - 1.2, 2 * g, 2 * g + 2)
    ax.text(xs[-1] + 1.3, y - 0.8, "vote over the K groups", va="center", fontsize=8)
    legend(ax, 4, 0, -0.3)
    finish(fig, ax, "protocols.svg", 14, 11.6)


def main(out: Path = OUT) -> list[Path]:
    """Draw every figure into ``out``; return the files written."""
    global OUT
    OUT = Path(out)
    OUT.mkdir(parents=True, exist_ok=True)
    partitions()
    modes()
    protocols()
    return [OUT / name for name in ("partitions.svg", "modes.svg", "protocols.svg")]


if __name__ == "__main__":
    main(*sys.argv[1:2])
