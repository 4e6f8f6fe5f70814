import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.skip_allowlist", "pytester"]


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


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the tool saves, by file name, still saved: plot tests read what is drawn, not the file."""
    from fourdcrystal import plots

    figures: dict[str, object] = {}
    save = plots.save_figure

    def keep(fig, path):
        figures[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def image_data(ax):
    """The first image an axes draws, as a float array with masked pixels NaN."""
    import numpy as np

    return np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan)


def colorbar_label(ax) -> str | None:
    """The label of the colour bar attached to an axes' first image."""
    cb = ax.images[0].colorbar
    return cb.ax.get_ylabel() if cb is not None else None
