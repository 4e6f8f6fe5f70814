"""`fourdcrystal inspect`."""

from __future__ import annotations

import click

from .common import config_option, load, opt
from .group import cli


@cli.command("inspect")
@click.argument("dataset", type=click.Path())
@config_option("inspect")
@opt("inspect", "samples", "--samples", type=int, help="Samples in the PNG montage (0: no montage).")
@click.option("--png", type=click.Path(dir_okay=False), help="Montage path. [default: DATASET/inspect.png]")
@opt("inspect", "seed", "--seed", type=int, help="Which samples are drawn.")
def inspect_cmd(dataset, config_path, samples, png, seed) -> None:
    """Counts per split / prototype / thickness (Å) of a DATASET, and a PNG montage of samples.

    The montage shows cbed, probe and vg on a log scale and qz (Å⁻¹) where vg is strong.
    """
    from pathlib import Path

    from ..simulation.inspect import dataset_montage, dataset_summary

    cfg = load("inspect", config_path)
    if cfg["samples"] > 0:
        from ..atomic import check_name_length, check_writable

        if png:
            check_name_length(png, "--png")
        check_writable(Path(png).parent if png else Path(dataset), "montage")
    click.echo(dataset_summary(dataset))
    if cfg["samples"] > 0:
        path = dataset_montage(dataset, png or Path(dataset) / "inspect.png", count=cfg["samples"], seed=cfg["seed"])
        click.echo(f"wrote {path}")
