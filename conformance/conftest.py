"""pytest plumbing of the conformance suite (an initial conftest: .ci/test passes
``conformance`` on the command line).

- ``--subjects=a,b`` (or env ``LOCALNORM_SUBJECTS``) selects subjects; default: all
  registered, those that cannot run here skipped with the reason.
- The ``harness`` fixture is parametrized over the selected subjects (test ids end in
  ``[<subject>]``).
- conformance/skips.txt skips listed test ids with their block's reason; listed ids that
  match nothing are reported at the end of the session.
- Hypothesis profiles ``ci``/``dev`` come from conformance/profiles.py
  (``HYPOTHESIS_PROFILE``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import profiles, subjects

SKIPS_FILE = Path(__file__).with_name("skips.txt")
ARRAY_API_SUBJECTS = ("numpy", "strict", "torch-array", "jax-array")


def pytest_addoption(parser):
    parser.addoption(
        "--subjects",
        default=None,
        help="comma-separated conformance subjects (default: env LOCALNORM_SUBJECTS, "
        f"else all of {', '.join(subjects.SUBJECTS)})",
    )


def read_skips(path: Path = SKIPS_FILE) -> list[tuple[str, str]]:
    """``(id_pattern, reason)`` pairs from a skips file."""
    out, reason, in_block = [], [], False
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line:
            reason, in_block = [], False
            continue
        if line.startswith("#"):
            if in_block:  # a comment after ids starts a new block's reason
                reason, in_block = [], False
            reason.append(line.lstrip("#").strip())
            continue
        in_block = True
        out.append((line, " ".join(r for r in reason if r) or "listed in conformance/skips.txt"))
    return out


def pytest_configure(config):
    config._localnorm_subjects = subjects.selected(config.getoption("subjects"))
    config._localnorm_skips = read_skips()
    config._localnorm_unmatched = []


def pytest_report_header(config):
    return (f"localnorm conformance: subjects={','.join(config._localnorm_subjects)}, "
            f"hypothesis profile={profiles.PROFILE}")


def pytest_generate_tests(metafunc):
    if "harness" in metafunc.fixturenames:
        names = metafunc.config._localnorm_subjects
        metafunc.parametrize("harness", names, ids=names, indirect=True)


@pytest.fixture
def harness(request):
    try:
        subject = subjects.load(request.param)
    except subjects.SubjectUnavailable as exc:
        pytest.skip(f"subject unavailable: {exc}")
    with profiles.capped(subject.max_examples):
        yield subject


@pytest.fixture
def core_session(request):
    """Skip unless an array-API subject is selected: the reference's self-checks run once,
    in the core suite, not again in every adapter's process."""
    if not any(s in request.config._localnorm_subjects for s in ARRAY_API_SUBJECTS):
        pytest.skip("reference self-checks run with the array-API subjects "
                    f"({', '.join(ARRAY_API_SUBJECTS)})")


def _subject_of(nodeid: str) -> str | None:
    """The registered subject a test id is for: its ``[...]`` suffix, or the longest
    registered name that starts it followed by ``-`` (``[keras-empty-batch]``)."""
    m = re.search(r"\[([^\]]*)\]$", nodeid)
    if not m:
        return None
    param = m.group(1)
    names = [n for n in subjects.SUBJECTS if param == n or param.startswith(n + "-")]
    return max(names, key=len) if names else param


def _glob(pattern: str) -> re.Pattern:
    """``*`` matches anything, ``?`` one character; brackets are literal (test ids end
    in ``[subject]``, which fnmatch would read as a character class)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


def apply_skips(skips, nodeids, selected_subjects):
    """Match skip patterns to collected node ids.

    Returns ``(reasons, unmatched)``: the skip reason of each matched node id, and the
    patterns that match nothing although their file was collected and their subject
    (the ``[...]`` suffix, when it names a registered subject) is selected.
    """
    reasons, used = {}, set()
    for nodeid in nodeids:
        for pattern, reason in skips:
            if nodeid == pattern or _glob(pattern).fullmatch(nodeid):
                reasons[nodeid] = reason
                used.add(pattern)
                break
    files = {nodeid.split("::")[0] for nodeid in nodeids}
    unmatched = []
    for pattern, _ in skips:
        if pattern in used or pattern.split("::")[0] not in files:
            continue
        subject = _subject_of(pattern)
        if subject in subjects.SUBJECTS and subject not in selected_subjects:
            continue
        unmatched.append(pattern)
    return reasons, unmatched


def pytest_collection_modifyitems(config, items):
    if not config._localnorm_skips:
        return
    reasons, unmatched = apply_skips(config._localnorm_skips, [i.nodeid for i in items],
                                     config._localnorm_subjects)
    for item in items:
        if item.nodeid in reasons:
            item.add_marker(pytest.mark.skip(reason=f"skips.txt: {reasons[item.nodeid]}"))
    config._localnorm_unmatched = unmatched


def pytest_terminal_summary(terminalreporter, config):
    unmatched = getattr(config, "_localnorm_unmatched", [])
    if unmatched:
        terminalreporter.section("conformance/skips.txt: ids matching no test", yellow=True)
        for pattern in unmatched:
            terminalreporter.write_line(f"WARNING: {pattern}")
