import math

import pytest

from fourdcrystal.catalog.sampling import draw_count, sample_groups


def _groups(sizes):
    return {f"P{i:03d}": [f"P{i:03d}-{j}" for j in range(n)] for i, n in enumerate(sizes)}


def test_square_root_law():
    sizes = list(range(1, 101)) + [400, 1000]
    drawn = sample_groups(_groups(sizes), "sqrt", seed=7)
    for i, n in enumerate(sizes):
        k = len(drawn[f"P{i:03d}"])
        assert k == max(1, round(math.sqrt(n)))
        assert abs(k - math.sqrt(n)) <= 0.5


def test_no_duplicates_and_subset():
    groups = _groups([1, 4, 9, 50, 1000])
    drawn = sample_groups(groups, "sqrt", seed=1)
    for label, ids in drawn.items():
        assert len(set(ids)) == len(ids)
        assert set(ids) <= set(groups[label])


def test_deterministic_and_seed_dependent():
    groups = _groups([100, 200, 300])
    a = sample_groups(groups, "sqrt", seed=3)
    assert a == sample_groups(groups, "sqrt", seed=3)
    assert a != sample_groups(groups, "sqrt", seed=4)


def test_groups_are_independent_streams():
    groups = _groups([100, 200])
    more = dict(groups, EXTRA=[f"x{i}" for i in range(30)])
    a, b = sample_groups(groups, seed=5), sample_groups(more, seed=5)
    assert all(a[k] == b[k] for k in groups)


def test_per_prototype_modes():
    groups = _groups([1, 3, 10])
    assert [len(v) for v in sample_groups(groups, "all").values()] == [1, 3, 10]
    assert [len(v) for v in sample_groups(groups, 2).values()] == [1, 2, 2]
    assert draw_count(0, "sqrt") == 0
    with pytest.raises(ValueError):
        sample_groups({"A": ["x", "x"]})


def test_cap_trims_depth_before_prototypes():
    groups = _groups([100] * 5 + [1] * 5)  # 5 groups drawing 10 each, 5 singletons
    drawn = sample_groups(groups, "sqrt", max_crystals=12, seed=0)
    assert sum(map(len, drawn.values())) == 12
    assert len(drawn) == 10  # every prototype still present
    assert max(map(len, drawn.values())) == 2
    assert sample_groups(groups, "sqrt", max_crystals=3, seed=0) == sample_groups(groups, "sqrt", max_crystals=3, seed=0)
