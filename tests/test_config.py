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
    ("select:\n  sources: [aflow, icsd]\n", "list item 'icsd': expected one of aflow, decorated, mp, files"),
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


def test_default_yaml_documents_every_key_with_its_default(configs_dir):
    """fourdcrystal/configs/default.yaml is the reference: every key of every stage, at the schema's default."""
    import yaml

    from fourdcrystal.config import SCHEMAS, defaults

    doc = yaml.safe_load((configs_dir / "default.yaml").read_text())
    assert set(doc) == set(SCHEMAS)

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict) for x in keys(v, f"{prefix}{k}.")}

    for section, schema in SCHEMAS.items():
        assert keys(doc[section]) == keys(defaults(schema)), section
        assert load_config(section, configs_dir / "default.yaml") == defaults(schema), section
        load_config(section, configs_dir / "quickstart.yaml")  # and the quickstart config is valid


def test_train_section_values():
    cfg = load_config("train", None, {"model.width": 8, "augment.dose_e": "null"})
    assert cfg["model"]["width"] == 8 and cfg["augment"]["dose_e"] is None and cfg["model"]["depth"] == 4
    with pytest.raises(FourdError, match="augment.dose_e"):
        load_config("train", None, {"augment.dose_e": [0, 10]})
    with pytest.raises(FourdError, match="model.decoders"):
        load_config("train", None, {"model.decoders": 3})


def test_named_configs_ship_inside_the_package(tmp_path, monkeypatch):
    """quickstart / default / release name the configs in fourdcrystal/configs from any folder; a file of that
    name in the current folder wins; an unknown name is a missing file."""
    from fourdcrystal.config import config_path

    monkeypatch.chdir(tmp_path)
    for name in ("quickstart", "default", "release"):
        path = config_path(name)
        assert path.is_file() and path.parent.name == "configs"
        load_config("simulate", name)
    assert load_config("select", "release")["out"] == "release/catalogue"
    (tmp_path / "release").write_text("select:\n  out: mine\n")
    assert load_config("select", "release")["out"] == "mine"
    with pytest.raises(FourdError, match="cannot read config file"):
        load_config("select", "fast")


def test_shipped_config_name_beside_its_output_folder(tmp_path, monkeypatch):
    """`--config release` where release/ (that config's own output) exists names the shipped config, as
    scripts/train_release_model.sh does on a resumed run; a folder given as a path is a one-line error."""
    from click.testing import CliRunner

    from fourdcrystal.cli import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "release").mkdir()
    (tmp_path / "release2").mkdir()
    assert load_config("supercell", "release2")["out"] == "release2/specimens"
    runner = CliRunner()
    res = runner.invoke(cli, ["supercell", "nowhere", "--config", "release"])
    assert "is a directory" not in res.output and "nowhere" in res.output, res.output
    (tmp_path / "mine").mkdir()
    res = runner.invoke(cli, ["supercell", "nowhere", "--config", "mine"])
    assert res.exit_code == 2 and "cannot read config file mine" in res.output, res.output


def _shipped_configs():
    from pathlib import Path

    return sorted(p.name for p in (Path(__file__).resolve().parents[1] / "fourdcrystal" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", _shipped_configs())
def test_every_shipped_config_validates_in_every_section_it_names(configs_dir, name):
    """Each shipped YAML (the release stages' fine-tuning configs included) passes its stages' schemas: a key
    renamed in a schema breaks the config that still uses the old name here, not in a user's reproduction."""
    import yaml

    from fourdcrystal.config import SCHEMAS

    doc = yaml.safe_load((configs_dir / name).read_text())
    assert doc and set(doc) <= set(SCHEMAS), (name, set(doc) - set(SCHEMAS))
    for section, values in doc.items():
        cfg = load_config(section, configs_dir / name)
        assert set(values) <= set(cfg), (name, section)
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
        assert {k: cfg[k] for k in scalars} == scalars, (name, section)  # the file's own values are in force
