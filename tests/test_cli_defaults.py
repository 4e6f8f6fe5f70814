"""One source of truth for defaults: the config schemas.

Every command-line option that overrides a config key shows the schema's default in its help and
has no default of its own; every stage takes --config; the library's config dataclasses agree
with the schemas. A new option with a hand-typed default, or a dataclass default changed alone,
fails here.
"""

from __future__ import annotations

import dataclasses
import re

import click
import pytest
from click.testing import CliRunner

from fourdcrystal.cli import cli
from fourdcrystal.cli.common import ConfigOption
from fourdcrystal.config import SCHEMAS, defaults, load_config, schema_field, show

STAGES = ("select", "supercell", "simulate", "inspect", "train", "tune", "evaluate", "predict", "strain")

# Options whose "[default: …]" is not a config value (it names where the value comes from, or belongs to
# simulate's single-structure mode, which has no config section).
NOT_CONFIG = {
    ("select", "--api-key"), ("select", "--endpoint"),
    ("simulate", "--zone-axis"), ("simulate", "--thickness"), ("simulate", "--lateral-size"), ("simulate", "--phi"),
    ("simulate", "--tilt"), ("simulate", "--strain"),
    ("inspect", "--png"), ("evaluate", "--out"), ("predict", "--out"), ("predict", "--centre"), ("predict", "--model"),
    ("strain", "--out"), ("strain", "--g1"),
}


def _options(name: str):
    return [p for p in cli.commands[name].params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_takes_config(name):
    assert "--config" in {o for p in _options(name) for o in p.opts}


@pytest.mark.parametrize("name", STAGES)
def test_help_defaults_come_from_the_schema(name):
    for p in _options(name):
        shown = re.search(r"\[default: ([^\]]*)\]", p.help or "")
        if isinstance(p, ConfigOption):
            assert p.section == name and p.default is None, p.opts
            field = schema_field(name, p.config_key)  # the key exists
            if shown.group(1) == show(field.default):
                continue
            # a worded default ("from the file", "the card's …") only where the schema's default is null
            assert field.default is None, (p.opts, shown.group(1))
        else:
            assert shown is None or (name, p.opts[0]) in NOT_CONFIG, (
                f"{name} {p.opts[0]} types its own default; declare it with _opt(section, key, …)")
            # no number or word typed as a default beside the help text (flags default to off)
            assert p.is_flag or not isinstance(p.default, (int, float, str)), (name, p.opts, p.default)


@pytest.mark.parametrize("name", ("tune", "evaluate", "predict", "strain", "inspect"))
def test_stage_config_from_file_and_command_line(name, tmp_path):
    """A config file's section sets a stage's values; an option given on the command line wins; a bad value in
    the file names the file and key, a bad option names the option."""
    key = {"tune": "limit", "evaluate": "batch_size", "predict": "chunk", "strain": "min_vectors",
           "inspect": "samples"}[name]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{name}:\n  {key}: 7\n")
    assert load_config(name, cfg)[key] == 7
    assert load_config(name, cfg, {key: 9})[key] == 9
    assert load_config(name, None) == defaults(SCHEMAS[name])
    cfg.write_text(f"{name}:\n  {key}: -1\n")
    res = CliRunner().invoke(cli, [name, "x", "y", "--config", str(cfg)] if name in ("tune", "evaluate")
                             else [name, "x", "--config", str(cfg)])
    assert res.exit_code == 2 and f"{cfg}: bad value for {key}: -1" in res.output, res.output


def test_dataclass_defaults_match_the_schemas():
    from fourdcrystal.evaluation.evaluate import EvalConfig
    from fourdcrystal.model.fcunet import FCUNetConfig
    from fourdcrystal.prediction.stage import PredictConfig
    from fourdcrystal.maps.strain import StrainConfig
    from fourdcrystal.training.augment import AugmentConfig
    from fourdcrystal.evaluation.tune import TuneConfig

    ev, tu, pr, st = (defaults(SCHEMAS[s]) for s in ("evaluate", "tune", "predict", "strain"))
    e = EvalConfig()
    assert (e.split, list(e.doses_e), e.match_radius_px, e.label_peaks.min_relative, e.model_min_relative, e.limit,
            e.batch_size, e.seed, e.thick_from_A) == (
        ev["split"], ev["doses"], ev["match_radius_px"], ev["label_min_relative"], ev["min_relative"], ev["limit"],
        ev["batch_size"], ev["seed"], ev["thick_from_A"])
    t = TuneConfig()
    assert (t.split, list(t.doses_e), t.match_radius_px, t.limit) == (tu["split"], tu["doses"],
                                                                      tu["match_radius_px"], tu["limit"])
    p = PredictConfig()
    assert (p.chunk_positions, p.batch_size, p.min_relative, p.baseline, p.max_peaks, p.save_maps, p.device) == (
        pr["chunk"], pr["batch_size"], pr["min_relative"], pr["baseline"], pr["max_peaks"], pr["maps"], pr["device"])
    s = StrainConfig()
    assert {k: getattr(s, k) for k in st} == st
    model = defaults(SCHEMAS["train"])["model"]
    assert {k: getattr(FCUNetConfig(), k) for k in model} == model
    aug = {k: v for k, v in defaults(SCHEMAS["train"])["augment"].items() if k not in ("enabled", "probability")}
    a = dataclasses.asdict(AugmentConfig())
    assert {k: (list(a[k]) if isinstance(a[k], tuple) else a[k]) for k in aug} == aug


@pytest.mark.parametrize("name", STAGES)
def test_config_help_offers_only_the_shipped_configs_that_configure_the_stage(name):
    """predict --config offers default only (no training recipe holds a predict section); train offers the
    training recipes; a config named in a stage's help loads that stage's section from the file itself."""
    import yaml

    from fourdcrystal.config import CONFIG_NAMES, config_path

    help_text = " ".join(next(p for p in _options(name) if "--config" in p.opts).help.split())
    offered = [n for n in CONFIG_NAMES if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", help_text)]
    holding = [n for n in CONFIG_NAMES if name in (yaml.safe_load(config_path(n).read_text(encoding="utf-8")) or {})]
    assert offered == holding and "default" in offered, (offered, holding)
    if name == "predict":
        assert offered == ["default"]


def test_predict_help_names_every_format_the_readers_take():
    """The format list in predict --help follows the readers' own tables (suffixes read natively and through
    RosettaSciIO), and names the fpd layout the HDF5 reader recognises."""
    from fourdcrystal.io.readers import RSCIIO

    text = " ".join(CliRunner().invoke(cli, ["predict", "--help"], terminal_width=200).output.split())
    for suffix in sorted(RSCIIO) + [".npy", ".mib", ".hdr"]:
        assert suffix in text, suffix
    assert "fpd HDF5" in text and "EMD 1.0" in text and "*_master.h5" in text


def test_library_errors_name_the_field_and_the_cli_the_option(tmp_path):
    """A library error names the setting in backticks (`k_pixel_invA`); the command line prints the option that
    sets it (--k-pixel); names that no option of the command sets keep their backticks."""
    import numpy as np
    import pytest

    from fourdcrystal import PredictSettings, predict
    from fourdcrystal.cli.group import options_named
    from fourdcrystal.errors import FourdError

    np.save(tmp_path / "scan.npy", np.ones((2, 2, 64, 64), np.float32))
    with pytest.raises(FourdError) as err:
        predict(tmp_path / "scan.npy", tmp_path / "r.h5", PredictSettings(energy_eV=200e3))
    assert "give `k_pixel_invA` (Å⁻¹ per detector pixel), or `camera_length_mm` (mm)" in str(err.value)
    from .conftest import run_cli

    res = run_cli("predict", str(tmp_path / "scan.npy"), "--out", str(tmp_path / "r.h5"), "--energy", "200e3")
    assert res.exit_code == 2
    assert "give --k-pixel (Å⁻¹ per detector pixel), or --camera-length (mm) with --detector-pixel (µm) and --energy" \
        in res.stderr and "`" not in res.stderr
    assert options_named("`epochs_this_run` must be >= 1; `nothing` here", cli.commands["train"]) == \
        "--epochs-this-run must be >= 1; `nothing` here"
    assert options_named("`model.width` 0", cli.commands["train"]) == "--width 0"
    assert options_named("check `mp.endpoint` or raise `mp.timeout_s`", cli.commands["select"]) == \
        "check --endpoint or raise --timeout"
