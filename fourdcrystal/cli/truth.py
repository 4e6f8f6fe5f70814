"""`fourdcrystal truth`."""

from __future__ import annotations

import click

from ..atomic import rank_zero_lock
from .group import cli


@cli.command("truth")
@click.argument("dataset", type=click.Path())
@click.option("--specimens", type=click.Path(file_okay=False),
              help="The specimens folder DATASET was simulated from. [default: the one index.json records]")
@click.option("--overwrite", is_flag=True, help="Recompute the truth of shards that already hold it.")
@click.pass_context
def truth_cmd(ctx, dataset, specimens, overwrite) -> None:
    """Add the physical truth to a DATASET simulated without it; no pattern is simulated again.

    For every pattern: each reflection's h k l, exact position (q_x, q_y) in Å⁻¹ from the
    specimen's lattice, orientation, tilt and strain, kinematic |V_g| in V, excitation error in
    Å⁻¹, and its strength in the pattern (mean disk intensity over the zero beam's). `evaluate`
    and `tune` score against it. Shards are rewritten one at a time, atomically; a rerun resumes.
    """
    from pathlib import Path

    from ..simulation.runner import add_truth

    with rank_zero_lock(Path(dataset)):
        done = add_truth(dataset, specimens, overwrite=overwrite, progress_bar=not ctx.obj.get("quiet"))
    click.echo(f"truth added to {done['done']} of {done['shards']} shards ({done['samples']} patterns, "
               f"{done['skipped']} shards already had it) in {done['seconds']:.0f} s; {dataset}")
