"""Square-root sampling per prototype group, without replacement.

Large groups (thousands of rock-salt or perovskite entries) would otherwise dominate a
training set; drawing ``round(sqrt(N))`` from a group of N keeps every prototype while
letting common ones contribute more. The reference implementation drew with replacement and
produced duplicates; here every crystal is drawn at most once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np


def draw_count(group_size: int, per_prototype: str | int) -> int:
    """How many crystals to draw from a group of ``group_size``."""
    if group_size <= 0:
        return 0
    if per_prototype == "sqrt":
        return max(1, round(math.sqrt(group_size)))
    if per_prototype == "all":
        return group_size
    return min(int(per_prototype), group_size)


def _group_rng(seed: int, label: str) -> np.random.Generator:
    # One stream per group, keyed by its label: adding or removing another group does not
    # change what is drawn from this one.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def sample_groups(groups: Mapping[str, Sequence[str]], per_prototype: str | int = "sqrt",
                  max_crystals: int | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Draw ids from each group; returns ``{label: drawn ids (sorted)}``.

    ``groups`` maps a prototype label to the ids in it. With ``max_crystals`` the draws are
    trimmed round-robin (first draws of every group before second draws, groups in a seeded
    random order), so a cap removes depth before it removes prototypes.
    """
    ordered: dict[str, list[str]] = {}
    for label in sorted(groups):
        ids = sorted(groups[label])
        if len(set(ids)) != len(ids):
            raise ValueError(f"group {label} lists an id twice")
        k = draw_count(len(ids), per_prototype)
        pick = _group_rng(seed, label).choice(len(ids), size=k, replace=False)
        ordered[label] = [ids[i] for i in pick]
    if max_crystals is not None and sum(map(len, ordered.values())) > max_crystals:
        labels = sorted(ordered)
        order = np.random.default_rng([seed, 0x5EED]).permutation(len(labels))
        kept: dict[str, list[str]] = {label: [] for label in labels}
        total, depth = 0, 0
        while total < max_crystals:
            for i in order:
                drawn = ordered[labels[i]]
                if depth < len(drawn) and total < max_crystals:
                    kept[labels[i]].append(drawn[depth])
                    total += 1
            depth += 1
        ordered = kept
    return {label: sorted(ids) for label, ids in ordered.items() if ids}
