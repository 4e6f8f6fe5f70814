"""scripts/ holds tools only: each listed in scripts/README.md, answering --help, importing no private name."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "scripts").iterdir() if p.suffix in (".py", ".sh"))


def test_every_tool_has_a_line_in_the_index_and_every_line_a_tool():
    index = (ROOT / "scripts" / "README.md").read_text(encoding="utf-8")
    listed = {line.split("`")[1] for line in index.splitlines() if line.startswith("| `")}
    assert listed == set(SCRIPTS)


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n.endswith(".py")])
def test_every_python_tool_answers_help(name):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / name), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and "usage" in res.stdout.lower(), res.stderr[-500:]


def _private_imports(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fourdcrystal"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_script_or_experiment_imports_a_private_name():
    """A private name may change in any refactor; tools and experiments use the package's public names only."""
    files = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "experiments").rglob("*.py"))
    bad = {str(p.relative_to(ROOT)): names for p in files if (names := _private_imports(p))}
    assert not bad, bad
