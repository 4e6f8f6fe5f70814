import pytest

from fourdcrystal.config import load_config
from fourdcrystal.errors import FourdError


def test_shipped_configs_load(configs_dir):
    for name in ("default.yaml", "quickstart.yaml"):
        cfg = load_config("select", configs_dir / name)
        assert cfg["sources"] == ["aflow"]
        assert cfg["per_prototype"] == "sqrt"
    assert load_config("select", configs_dir / "quickstart.yaml")["max_crystals"] == 24


def test_defaults_without_file():
    cfg = load_config("select")
    assert cfg["seed"] == 0 and cfg["mp"]["include_gnome"] is False and cfg["mp"]["num_sites"] == [1, 64]


@pytest.mark.parametrize("text, fragment", [
    ("select:\n  sed: 3\n", "unknown key 'sed'"),
    ("select:\n  mp:\n    chunksize: 3\n", "unknown key 'mp.chunksize'"),
    ("select:\n  per_prototype: half\n", "bad value for per_prototype: 'half'; expected sqrt, all or a positive integer"),
    ("select:\n  seed: -1\n", "bad value for seed: -1; expected an integer >= 0"),
    ("select:\n  sources: [aflow, icsd]\n", "list item 'icsd': expected one of aflow, mp, files"),
    ("select:\n  mp:\n    num_sites: [10, 2]\n", "expected min <= max"),
    ("select:\n  mp:\n    stable_only: perhaps\n", "expected true or false"),
    ("selekt:\n  seed: 1\n", "unknown section 'selekt'"),
    ("select: [1, 2\n", "not valid YAML"),
])
def test_bad_config_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(FourdError) as err:
        load_config("select", path)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg
    assert str(path) in msg


def test_overrides_win_and_are_validated(configs_dir):
    cfg = load_config("select", configs_dir / "quickstart.yaml", {"max_crystals": 5, "mp.elements": "Si,O", "seed": None})
    assert cfg["max_crystals"] == 5 and cfg["mp"]["elements"] == ["Si", "O"] and cfg["seed"] == 0
    with pytest.raises(FourdError, match="command line: bad value for mp.num_sites"):
        load_config("select", None, {"mp.num_sites": "a,b"})


def test_missing_config_file(tmp_path):
    with pytest.raises(FourdError, match="cannot read config file"):
        load_config("select", tmp_path / "nope.yaml")
