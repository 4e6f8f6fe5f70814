"""Typed settings of each stage, for calling the library from Python.

Every class here is generated from the stage's schema in :mod:`fourdcrystal.config`, which is the one place
where a key's name, default, allowed values and help are written: YAML files, the command line and these
classes all read it, so they cannot drift apart. A settings object is a frozen dataclass whose fields are the
stage's YAML keys (nested sections are nested settings objects); it is validated when made, and a bad value is
one :class:`~fourdcrystal.errors.FourdError` (a ``ValueError``) that names the field:

>>> from fourdcrystal.settings import StrainSettings
>>> StrainSettings(tolerance=0.1).tolerance
0.1
>>> StrainSettings(weights="cubic")
Traceback (most recent call last):
...
fourdcrystal.errors.FourdError: StrainSettings: bad value for weights: 'cubic'; expected one of auto, intensity, squared, quartic, none, scan

Options with a fixed set of values are typed ``Literal`` (``typing.get_type_hints(StrainSettings)["weights"]``).
``Settings.from_config(path, **overrides)`` reads a YAML config's section; ``as_dict()`` gives the plain dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from .config import SCHEMAS, Field, Schema, _validate, load_config

__all__ = ["Settings", "SelectSettings", "SupercellSettings", "SimulateSettings", "TrainSettings",
           "InspectSettings", "TuneSettings", "EvaluateSettings", "PredictSettings", "StrainSettings"]


class Settings:
    """Base of the generated settings classes: validation on construction, ``as_dict`` and ``from_config``."""

    _section: ClassVar[str]
    _schema: ClassVar[Schema]

    def __post_init__(self) -> None:
        raw = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        checked = _validate(raw, self._schema, "", type(self).__name__)
        for f in dataclasses.fields(self):  # normalised values ("clean" -> None, lists, numbers from text)
            value = checked[f.name]
            if isinstance(self._schema[f.name], Mapping):  # a nested section: its field's type is its settings class
                value = f.type(**value)
            object.__setattr__(self, f.name, value)

    def as_dict(self) -> dict:
        """The settings as the plain nested dict a YAML section holds (and the stage functions read)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, path=None, **overrides: Any):
        """The section of YAML config ``path`` (or of a shipped config's name), with ``overrides`` by key."""
        if not hasattr(cls, "_section"):
            raise TypeError(f"{cls.__name__} is part of a stage's settings; read the stage's settings instead")
        return cls(**load_config(cls._section, path, {k: v for k, v in overrides.items() if v is not None}))


def _plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Settings) else value


def _annotation(field: Field) -> Any:
    choices = getattr(field.parse, "choices", None)
    if choices:  # a Choice: the allowed strings
        return Literal[tuple(choices)]
    if field.default is None:
        return Any
    return type(field.default)


def _make(name: str, schema: Schema, section: str | None, doc: str) -> type:
    fields = []
    for key, field in schema.items():
        if isinstance(field, Mapping):
            nested = _make(f"{name.removesuffix('Settings')}{key.title().replace('_', '')}Settings", field, None,
                           f"The ``{key}`` keys of :class:`{name}`.")
            fields.append((key, nested, dataclasses.field(default_factory=nested)))
        else:
            default = field.default
            spec = (dataclasses.field(default_factory=lambda d=default: list(d)) if isinstance(default, list)
                    else dataclasses.field(default=default))
            fields.append((key, _annotation(field), spec))
    ns = {"__doc__": doc + "\n\nFields (YAML keys), with their defaults and meaning:\n\n" + "\n".join(
        f"* ``{k}`` = ``{f.default!r}``: {f.help}" for k, f in schema.items() if isinstance(f, Field)),
        "__module__": __name__, "_schema": schema}
    if section is not None:
        ns["_section"] = section
    cls = dataclasses.make_dataclass(name, fields, bases=(Settings,), frozen=True, namespace=ns)
    return cls


SelectSettings = _make("SelectSettings", SCHEMAS["select"], "select", "`fourdcrystal select`: the crystal catalogue.")
SupercellSettings = _make("SupercellSettings", SCHEMAS["supercell"], "supercell",
                          "`fourdcrystal supercell`: specimens (zone axes, rotations, tilts, boxes, thicknesses).")
SimulateSettings = _make("SimulateSettings", SCHEMAS["simulate"], "simulate",
                         "`fourdcrystal simulate`: multislice CBED and its labels.")
TrainSettings = _make("TrainSettings", SCHEMAS["train"], "train", "`fourdcrystal train`: the FCU-Net and its training.")
InspectSettings = _make("InspectSettings", SCHEMAS["inspect"], "inspect", "`fourdcrystal inspect`: a data set's montage.")
TuneSettings = _make("TuneSettings", SCHEMAS["tune"], "tune", "`fourdcrystal tune`: peak settings on the validation split.")
EvaluateSettings = _make("EvaluateSettings", SCHEMAS["evaluate"], "evaluate",
                         "`fourdcrystal evaluate`: the model and the baseline against the physical truth.")
PredictSettings = _make("PredictSettings", SCHEMAS["predict"], "predict",
                        "`fourdcrystal predict`: Bragg vectors from a 4D-STEM scan.")
StrainSettings = _make("StrainSettings", SCHEMAS["strain"], "strain",
                       "`fourdcrystal strain`: strain and rotation maps from Bragg vectors.")
