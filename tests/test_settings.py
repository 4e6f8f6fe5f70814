"""The typed settings of each stage (fourdcrystal.settings), generated from the config schemas."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from fourdcrystal.config import SCHEMAS, defaults, load_config
from fourdcrystal.errors import FourdError
from fourdcrystal import settings as S

CLASSES = {"select": S.SelectSettings, "supercell": S.SupercellSettings, "simulate": S.SimulateSettings,
           "train": S.TrainSettings, "inspect": S.InspectSettings, "tune": S.TuneSettings,
           "evaluate": S.EvaluateSettings, "predict": S.PredictSettings, "strain": S.StrainSettings}


def test_every_stage_has_settings_and_every_key_is_a_field_with_the_schema_default():
    assert set(CLASSES) == set(SCHEMAS)
    for section, cls in CLASSES.items():
        assert cls().as_dict() == defaults(SCHEMAS[section]), section
        assert [f.name for f in dataclasses.fields(cls)] == list(SCHEMAS[section]), section


def test_fixed_choices_are_literal_and_a_bad_value_is_a_value_error_naming_the_field():
    hints = typing.get_type_hints(S.PredictSettings)
    assert typing.get_args(hints["method"]) == ("auto", "model", "baseline", "both")
    assert typing.get_args(typing.get_type_hints(S.StrainSettings)["weights"]) == (
        "auto", "intensity", "squared", "quartic", "none", "scan")
    with pytest.raises(ValueError, match=r"^PredictSettings: bad value for method: 'all'; expected one of auto, "
                                         r"model, baseline, both$") as info:
        S.PredictSettings(method="all")
    assert isinstance(info.value, FourdError)
    with pytest.raises(FourdError, match=r"EvaluateSettings: bad value for match_radius_px: -1"):
        S.EvaluateSettings(match_radius_px=-1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'metod'"):
        S.PredictSettings(metod="model")


def test_values_are_normalised_as_the_yaml_loader_does_and_objects_are_frozen():
    ev = S.EvaluateSettings(doses="clean,1e5")
    assert ev.doses == [None, 1e5] == load_config("evaluate", None, {"doses": "clean,1e5"})["doses"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.split = "val"
    assert dataclasses.replace(ev, split="val").split == "val"


def test_nested_sections_are_nested_settings():
    t = S.TrainSettings(model={"width": 8}, epochs=3)
    assert t.model.width == 8 and t.model.depth == S.TrainSettings().model.depth and t.epochs == 3
    assert t.as_dict()["model"]["width"] == 8
    with pytest.raises(FourdError, match=r"TrainSettings: bad value for model.width"):
        S.TrainSettings(model={"width": 0})
    assert isinstance(S.SelectSettings().mp, S.Settings)


def test_from_config_reads_a_section_and_overrides_win(configs_dir):
    p = S.PredictSettings.from_config("default", method="both", chunk=None)
    assert p.method == "both" and p.chunk == load_config("predict", configs_dir / "default.yaml")["chunk"]
    q = S.TrainSettings.from_config(configs_dir / "release5.yaml")
    assert q.as_dict() == load_config("train", configs_dir / "release5.yaml")
