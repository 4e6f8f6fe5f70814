"""Decorated prototypes: more distinct crystals from the AFLOW library, by a stated substitution rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Element

from fourdcrystal.catalog.decorate import decorate, decorations, load_decorated, substitutes
from fourdcrystal.catalog.prototypes import label_structure
from fourdcrystal.catalog.sources import load_aflow


def test_substitutes_follow_the_rule():
    for x in ("Si", "Na", "Fe", "La", "Cl", "Ti"):
        ex = Element(x)
        for y in substitutes(x):
            ey = Element(y)
            assert set(ex.common_oxidation_states) & set(ey.common_oxidation_states), (x, y)
            r = abs(ey.atomic_radius - ex.atomic_radius) / ex.atomic_radius
            family = ex.group == ey.group or (ex.is_lanthanoid and ey.is_lanthanoid)
            assert r <= (0.25 if family else 0.10) + 1e-12, (x, y, r)
            assert ey.Z <= 83 and not ey.is_noble_gas and y not in ("Tc", "Pm")
    assert "Ge" in substitutes("Si") and "He" not in substitutes("Ne")


def test_a_decoration_keeps_the_prototype_and_scales_the_cell():
    """Rock salt NaCl → KCl: same prototype label, every Na site K, the cell scaled by the cube root of the atoms'
    volume ratio, fractional coordinates unchanged."""
    nacl = next(e for e in load_aflow() if e.source_id == "AB_cF8_225_a_b")
    assert {"Na": "K"} in decorations(nacl.structure)
    species = sorted({s.specie.symbol for s in nacl.structure})
    x = species[0]
    y = substitutes(x)[0]
    out = decorate(nacl.structure, {x: y})
    assert Counter(s.specie.symbol for s in out) == Counter(y if s.specie.symbol == x else s.specie.symbol
                                                            for s in nacl.structure)
    r3 = lambda st: sum(Element(s.specie.symbol).atomic_radius ** 3 for s in st)  # noqa: E731
    assert out.volume / nacl.structure.volume == pytest.approx(r3(out) / r3(nacl.structure), rel=1e-9)
    assert np.allclose(out.frac_coords, nacl.structure.frac_coords)
    assert label_structure(out, 0.1).prototype == label_structure(nacl.structure, 0.1).prototype


def test_load_decorated_gives_distinct_crystals_in_every_system():
    """About 1,800 variants of the 288 library entries, distinct ids, seeded, no two species merged, all seven
    crystal systems; with the library itself well over 1,500 distinct crystals."""
    d = load_decorated()
    assert len(d) + 288 >= 1500 and len({e.id for e in d}) == len(d)
    assert [e.id for e in load_decorated()] == [e.id for e in d]
    assert [e.id for e in load_decorated(seed=1)] != [e.id for e in d]
    for e in d[:200]:
        orig = {s.specie.symbol for s in next(b for b in load_aflow() if b.id == e.extra["decorated_from"]).structure}
        assert len({s.specie.symbol for s in e.structure}) == len(orig)
    systems = Counter()
    for e in d[::7]:
        systems[label_structure(e.structure, 0.1).crystal_system] += 1
    assert len(systems) == 7, systems
