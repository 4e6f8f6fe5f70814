"""Progress bars on long work, silenced by ``fourdcrystal -q``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("fourdcrystal")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar on stderr, unless quiet mode is on or stderr is no terminal."""
    return tqdm(items, desc=desc, total=total, unit=unit, disable=True if _quiet else None, leave=False,
                dynamic_ncols=True)


def bar(total: int, desc: str, unit: str = "it", disable: bool = False, initial: int = 0) -> tqdm:
    """A manual tqdm bar (``.update(n)``) that shows the rate, e.g. patterns/s; ``initial``: work already done
    (a resumed run)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=True if (_quiet or disable) else None, leave=False,
                dynamic_ncols=True, initial=initial)
