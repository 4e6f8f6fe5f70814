"""pytest plugin: ``--allowed-skips FILE`` fails the run on any skip that FILE does not allow.

A skip is a test that did not run. CI (``.ci/run``) and the README's test line pass
``--allowed-skips tests/allowed_skips.txt``, so a test that starts skipping for a new reason turns the run
red instead of silently not testing. FILE has one entry per line, ``NODE_ID_PATTERN | REASON_START | WHY``:
the test's node id (``*`` matches any text; everything else, brackets included, is literal), how its skip
reason begins, and why that skip is acceptable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    parser.addoption("--allowed-skips", metavar="FILE", default=None,
                     help="fail the run on a skip whose node id and reason no line of FILE allows")


def _pattern(text: str) -> re.Pattern:
    # not fnmatch: parametrised node ids hold brackets, which fnmatch reads as character sets
    return re.compile(".*".join(re.escape(part) for part in text.split("*")) + r"\Z")


def read_allowed(path: str | Path) -> list[tuple[re.Pattern, str]]:
    """(node id pattern, reason start) per entry line; blank lines and # comments ignored."""
    entries = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or not all(parts):
            raise pytest.UsageError(f"{path}:{n}: expected 'NODE_ID_PATTERN | REASON_START | WHY'")
        entries.append((_pattern(parts[0]), parts[1]))
    return entries


def skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


class _Skips:
    def __init__(self, allowed: list[tuple[re.Pattern, str]]):
        self.allowed = allowed
        self.refused: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not any(pat.match(report.nodeid) and reason.startswith(start) for pat, start in self.allowed):
                self.refused.append((report.nodeid, reason))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.refused:
            terminalreporter.section("skips not on the allow-list", red=True)
            for nodeid, reason in self.refused:
                terminalreporter.line(f"{nodeid}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        if self.refused and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config) -> None:
    path = config.getoption("--allowed-skips")
    if path:
        config.pluginmanager.register(_Skips(read_allowed(path)), "fourdcrystal-allowed-skips")
