"""`fourdcrystal quickstart`."""

from __future__ import annotations

import click

from ..errors import FourdError
from .common import shipped_text
from .evaluate import evaluate_cmd
from .group import cli
from .predict import predict_cmd
from .select import select_cmd
from .simulate import simulate_cmd
from .supercell import supercell_cmd
from .train import train_cmd


@cli.command("quickstart")
@click.option("--config", "config_path", type=str, default="quickstart",
              show_default=True, help="YAML config with a section per stage (their `out` folders, relative to the "
                                      "current folder, hold the results), or "
                                      f"{shipped_text('select', 'supercell', 'simulate', 'train')}.")
@click.pass_context
def quickstart_cmd(ctx: click.Context, config_path) -> None:
    """Run every stage once: select → supercell → simulate → train → evaluate → shipped → predict.

    train and evaluate make and score a small smoke model (a pipeline check, not a usable model);
    shipped scores the model shipped in the package on the same test split, and predict runs it
    with the classical baseline on a demo 4D-STEM scan made from the test split (crystals neither
    model saw). Finished stages are reused on a second run (delete a stage's folder to redo it).
    Ends by printing where every output is and the shipped model's table beside the baseline.
    """
    import json
    import time
    from pathlib import Path

    from ..config import load_config
    from ..evaluation.evaluate import format_table
    from ..quickstart import DEMO_RESULT, DEMO_SCAN, SHIPPED_EVALUATION, STAGES, demo_scan, finished

    from ..config import config_path as resolve_config
    from ..config import shipped_configs

    if not resolve_config(config_path).exists():
        raise FourdError(f"--config {config_path} not found; give a config file or one of "
                         f"{', '.join(shipped_configs('select', 'supercell', 'simulate', 'train'))}")
    cfg = {s: load_config(s, config_path, {}) for s in ("select", "supercell", "simulate", "train")}
    root = Path(cfg["train"]["out"]).parent
    model = Path(cfg["train"]["out"]) / "model.pt"
    dataset = cfg["simulate"]["out"]
    scan = root / DEMO_SCAN
    result = root / DEMO_RESULT
    run = {
        "select": lambda: ctx.invoke(select_cmd, config_path=config_path),
        "supercell": lambda: ctx.invoke(supercell_cmd, catalogue=cfg["select"]["out"], config_path=config_path),
        "simulate": lambda: ctx.invoke(simulate_cmd, specimens=cfg["supercell"]["out"], config_path=config_path),
        "train": lambda: ctx.invoke(train_cmd, dataset=dataset, config_path=config_path,
                                    resume=(Path(cfg["train"]["out"]) / "checkpoint.pt").exists()),
        "evaluate": lambda: ctx.invoke(evaluate_cmd, model=str(model), dataset=dataset),
        "shipped": lambda: ctx.invoke(evaluate_cmd, model="release", dataset=dataset,
                                      out=str(root / SHIPPED_EVALUATION)),
        "predict": lambda: (demo_scan(dataset, scan),
                            ctx.invoke(predict_cmd, paths=("release", str(scan)), out=str(result), baseline=True,
                                       overwrite=True)),
    }
    t_all = time.perf_counter()
    for n, stage in enumerate(STAGES, 1):
        if finished(stage, cfg, root):
            click.echo(f"[{n}/{len(STAGES)}] {stage}: done before, reused")
            continue
        click.echo(f"[{n}/{len(STAGES)}] {stage}")
        t0 = time.perf_counter()
        run[stage]()
        click.echo(f"[{n}/{len(STAGES)}] {stage}: {time.perf_counter() - t0:.0f} s")
    smoke = json.loads((model.parent / "evaluation" / "report.json").read_text())
    shipped = json.loads((root / SHIPPED_EVALUATION / "report.json").read_text())
    click.echo(f"\nquickstart finished in {time.perf_counter() - t_all:.0f} s. Outputs:")
    for what, path in (("catalogue", Path(cfg["select"]["out"]) / "catalogue.json"),
                       ("specimens", Path(cfg["supercell"]["out"]) / "manifest.json"),
                       ("dataset", Path(dataset) / "index.json"), ("smoke model", model),
                       ("training curves", model.parent / "curves.png"),
                       ("smoke evaluation", model.parent / "evaluation" / "report.json"),
                       ("its plots", model.parent / "evaluation" / "metrics_vs_thickness.png"),
                       ("its worst patterns", model.parent / "evaluation" / "worst.png"),
                       ("shipped evaluation", root / SHIPPED_EVALUATION / "report.json"),
                       ("its plots", root / SHIPPED_EVALUATION / "metrics_vs_thickness.png"),
                       ("its worst patterns", root / SHIPPED_EVALUATION / "worst.png"),
                       ("demo 4D-STEM scan", scan), ("Bragg vectors", result), ("summary", result.with_suffix(".png"))):
        click.echo(f"  {what:>18s}: {path}")
    f1 = {m: smoke["overall"][m]["f1"] for m in ("model", "baseline")}
    click.echo(f"\npipeline check: the {cfg['train']['epochs']}-epoch smoke model trained here scores F1 "
               f"{f1['model']:.2f} (the baseline beside it, with the untuned default settings of an untuned card, "
               f"{f1['baseline']:.2f}): training runs end to end; it is not a usable model, and neither number is "
               f"the table's below.")
    click.echo(f"\nthe model shipped in the package on {shipped['patterns']} {shipped['split']} patterns of this dataset "
               f"(crystals it never saw), beside the tuned classical baseline; the demo scan's Bragg vectors are "
               f"its too:")
    click.echo(format_table(shipped))
