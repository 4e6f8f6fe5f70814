import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _no_real_mp(monkeypatch):
    # Tests must never reach the real Materials Project, whatever the developer's shell holds.
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("MP_API_ENDPOINT", raising=False)


@pytest.fixture
def configs_dir() -> Path:
    return ROOT / "fourdcrystal" / "configs"


def run_cli(*args: str, **kw):
    """Run the CLI in-process with click's runner; returns the Result."""
    from click.testing import CliRunner

    from fourdcrystal.cli import cli

    runner = CliRunner()
    return runner.invoke(cli, list(args), catch_exceptions=False, **kw)
