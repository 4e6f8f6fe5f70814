"""The examples in the physics and calibration modules' docstrings run and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("fourdcrystal.simulation.optics", "fourdcrystal.prediction.calibration", "fourdcrystal.lattice", "fourdcrystal.detection.peaks",
           "fourdcrystal.settings", "fourdcrystal.api",
           "fourdcrystal.specimens.specimen")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_public_functions_say_parameters_and_returns(name):
    """Every public function of these modules documents its parameters and result, with units."""
    import inspect

    module = importlib.import_module(name)
    missing = [n for n, f in inspect.getmembers(module, inspect.isfunction)
               if f.__module__ == name and not n.startswith("_")
               and not ("Parameters" in (f.__doc__ or "") and "Returns" in (f.__doc__ or ""))]
    assert not missing, f"{name}: no Parameters/Returns in {missing}"
