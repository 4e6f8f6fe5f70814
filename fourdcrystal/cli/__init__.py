"""The `fourdcrystal` command line: a thin layer that maps options onto the stages' settings, calls the
library's stage functions (:mod:`fourdcrystal.api`) and prints. One module per command.

Every user-facing problem is raised as :class:`~fourdcrystal.errors.FourdError` and printed as one line,
``error: ...``, with exit code 2.
"""

from .group import cli, main

# each module registers its command on the group when imported
from . import (  # noqa: E402
    evaluate, export, inspect, predict, quickstart, select, simulate,
    strain, strain_benchmark, supercell, train, truth, tune,
)

COMMAND_MODULES = (evaluate, export, inspect, predict, quickstart, select, simulate,
                   strain, strain_benchmark, supercell, train, truth, tune)

__all__ = ["cli", "main"]
