"""fourdcrystal: crystal structures -> simulated CBED -> FCU-Net -> Bragg vectors from 4D-STEM data.

Every stage is a function here, with its typed settings (the command line calls the same functions):

>>> from fourdcrystal import predict, PredictSettings
>>> PredictSettings(energy_eV=300e3, semiangle_mrad=1.5).method
'auto'

``select``, ``supercell``, ``simulate``, ``train``, ``tune``, ``evaluate``, ``predict``, ``strain`` and
``export`` (:mod:`fourdcrystal.api`); their settings in :mod:`fourdcrystal.settings`; every error a user can cause
is a :class:`FourdError` (a ``ValueError``) of one line.
"""

from importlib.metadata import PackageNotFoundError, version

from .api import evaluate, export, predict, select, simulate, strain, supercell, train, tune
from .errors import FourdError
from .settings import (EvaluateSettings, InspectSettings, PredictSettings, SelectSettings, SimulateSettings,
                       StrainSettings, SupercellSettings, TrainSettings, TuneSettings)

try:
    __version__ = version("fourdcrystal")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "FourdError",
           "select", "supercell", "simulate", "train", "tune", "evaluate", "predict", "strain", "export",
           "SelectSettings", "SupercellSettings", "SimulateSettings", "TrainSettings", "InspectSettings",
           "TuneSettings", "EvaluateSettings", "PredictSettings", "StrainSettings"]
