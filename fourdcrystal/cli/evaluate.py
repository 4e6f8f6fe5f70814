"""`fourdcrystal evaluate`."""

from __future__ import annotations

import click

from .common import config_option, load, match_radius_option, network_options, opt
from .group import cli


@cli.command("evaluate")
@click.argument("model", type=click.Path())
@click.argument("dataset", type=click.Path())
@config_option("evaluate")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder. [default: MODEL's folder/evaluation]")
@opt("evaluate", "split", "--split", type=click.Choice(["test", "val", "train"]),
     help="Which split of DATASET (test: crystals never seen in training).")
@opt("evaluate", "doses", "--doses", help="Electrons per pattern, comma-separated; 'clean' = the noise-free simulation.")
@match_radius_option("evaluate")
@opt("evaluate", "label_min_relative", "--label-min-relative", type=float,
     help="The secondary V_g label score: maxima of the label V_g ≥ this fraction of the zero beam's.")
@opt("evaluate", "min_relative", "--min-relative", type=float,
     help="Model peaks: maxima of the predicted V_g ≥ this fraction of the zero beam's V_g (or of the strongest "
           "maximum, where the card's tuned threshold is relative to that), for every pattern whatever its dose.",
     default_text="the threshold tuned on the validation split, from the model card")
@opt("evaluate", "limit", "--limit", type=int, help="Only the first N patterns of the split.", default_text="all")
@opt("evaluate", "batch_size", "--batch-size", type=int, help="Patterns per model batch.")
@opt("evaluate", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@network_options("evaluate")
@opt("evaluate", "seed", "--seed", type=int, help="Seed of the shot noise.")
@opt("evaluate", "thick_from_A", "--thick-from", type=float, help="Also report the patterns at least this thick (Å) "
                                                                   "together.")
def evaluate_cmd(model, dataset, config_path, out, **_options) -> None:
    """Compare MODEL (model.pt with its card; "release": the shipped model) and the classical baseline on DATASET.

    Both methods see the same patterns, clean and at each dose, and use the peak settings tuned
    on the validation split and stored in the model card (fourdcrystal tune). Peaks are scored
    against the physical truth in the shards (every reflection's exact position from the
    specimen's lattice, orientation, tilt and strain; `fourdcrystal truth` adds it to old data
    sets): precision, recall, F1, rms position error (px and Å⁻¹) and its bias by |g|, intensity
    correlation with the kinematic |V_g| and q_z error, by dose, thickness (< 200, 200–400,
    ≥ 400 Å), beam energy, semi-angle and zone-axis index; the score against the V_g label maps is a
    secondary table. The out-of-plane crystal tilt (mrad) of the patterns tilted ≤ 8 mrad is scored
    against the shards' true tilt, beside answering zero: the classical Laue fit on the baseline's
    disks, the same fit on the model's vectors, the model's q_z, q_z and that fit combined, and the
    learned tilt read at the model's vectors (failed fits counted). Writes
    OUT/report.json, OUT/metrics_vs_thickness.png and OUT/worst.png, and prints the tables.
    """
    from ..api import evaluate, evaluation_folder
    from ..evaluation.evaluate import format_table
    from ..settings import EvaluateSettings

    c = load("evaluate", config_path)
    out = evaluation_folder(model, out)
    report = evaluate(model, dataset, out, EvaluateSettings(**c))
    click.echo(f"{report['patterns']} {c['split']} patterns of {dataset}")
    click.echo(format_table(report))
    click.echo(f"wrote {out / 'report.json'}, {out / 'metrics_vs_thickness.png'}, {out / 'worst.png'}")
