"""`fourdcrystal tune`."""

from __future__ import annotations

import click

from .common import config_option, load, match_radius_option, opt
from .group import cli


@cli.command("tune")
@click.argument("model", type=click.Path())
@click.argument("dataset", type=click.Path())
@config_option("tune")
@opt("tune", "split", "--split", type=click.Choice(["val", "train", "test"]),
     help="The split to tune on (val: never trained on, never tested on).")
@opt("tune", "doses", "--doses", help="Electrons per pattern, comma-separated; the mean F1 over them is maximised.")
@match_radius_option("tune")
@opt("tune", "limit", "--limit", type=int, help="Only the first N patterns of the split.", default_text="all")
@opt("tune", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--strain-benchmark", type=click.Path(file_okay=False),
              help="A fourdcrystal strain-benchmark folder: among the model thresholds within 0.01 of the best mean "
                   "F1, take the one whose vectors fit the strain of its tuning series best (rms strain error, %).")
@click.option("--dry-run", is_flag=True, help="Print the chosen settings; do not write them into the card.")
def tune_cmd(model, dataset, config_path, dry_run, strain_benchmark, **_options) -> None:
    """Choose the peak settings of MODEL and of the classical baseline on DATASET's validation split.

    Grid search (the same patterns and Poisson draws for both methods): the model's V_g
    threshold and spacing, the baseline's correlation power, smoothing (px), threshold and
    spacing, each maximising the F1 averaged over the doses; then each method's sub-pixel
    placement by rms position error. Writes the settings and their validation scores into
    MODEL's card (section "peaks"); evaluate and predict use them from then on.
    """
    from ..api import tune
    from ..evaluation.tune import format_tuning
    from ..model.card import card_path, resolve_weights
    from ..settings import TuneSettings

    c = load("tune", config_path)
    section = tune(model, dataset, TuneSettings(**c), strain_benchmark=strain_benchmark, write=not dry_run)
    click.echo(f"tuned on {section['tuned_on']['patterns']} {c['split']} patterns of {dataset}")
    click.echo(format_tuning(section))
    if dry_run:
        return

    click.echo(f"wrote the settings into {card_path(resolve_weights(model))}")
