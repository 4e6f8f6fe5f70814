"""`fourdcrystal train`."""

from __future__ import annotations

import os

import click

from ..errors import FourdError
from .common import config_option, load_explicit, opt
from .group import cli


@cli.command("train")
@click.argument("dataset", required=False, type=click.Path())
@config_option("train")
@opt("train", "out", "--out", type=click.Path(file_okay=False), help="Output folder for model.pt + model.json.")
@opt("train", "epochs", "--epochs", type=int, help="Training epochs.")
@opt("train", "crop_px", "--crop", "crop_px", type=int, default_text="whole patterns",
     help="Train on random CROP×CROP windows of the patterns (pixels, a multiple of 2^depth; ~(side/CROP)² cheaper "
           "per step); validation and prediction run on whole patterns.")
@opt("train", "batch_size", "--batch-size", type=int, help="Patterns per step and process.")
@opt("train", "lr", "--lr", type=float, help="Peak learning rate (AdamW).")
@click.option("--schedule", type=click.Choice(["cosine", "noam", "constant"]), help="LR schedule after warm-up.")
@click.option("--domain", type=click.Choice(["pattern", "spectral"]),
              help="pattern: real U-Net on the probe cross-correlation map and the pattern (default); spectral: "
                   "crystal4D's complex U-Net on the Fourier-space cross-correlation.")
@opt("train", "model.width", "--width", type=int, help="Channels at the first U-Net level (complex for spectral).")
@opt("train", "model.depth", "--depth", type=int, help="U-Net down-samplings.")
@click.option("--decoders", type=click.Choice(["1", "2"]), help="1: shared decoder for vg and qz; 2: one each.")
@opt("train", "model.dropout", "--dropout", type=float, help="Dropout probability.")
@click.option("--loss-weighting", type=click.Choice(["uncertainty", "fixed"]), help="Task weighting of the loss.")
@click.option("--no-augment", is_flag=True, help="Train on the clean simulated patterns.")
@opt("train", "loader_workers", "--loader-workers", type=int, help="DataLoader worker processes.")
@opt("train", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@opt("train", "seed", "--seed", type=int, help="Random seed.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that holds another run.")
@click.option("--epochs-this-run", type=int, help="Stop after this many epochs (job time limits); --resume continues.")
@click.option("--init", "init", type=click.Path(dir_okay=False), help="Start from a trained model.pt (fine-tuning).")
@click.option("--summary", is_flag=True, help="Print parameter count and FLOPs per pattern, then exit.")
def train_cmd(dataset, config_path, out, epochs, crop_px, batch_size, lr, schedule, domain, width, depth, decoders, dropout,
              loss_weighting, no_augment, loader_workers, device, seed, resume, overwrite, epochs_this_run, init,
              summary) -> None:
    """Train FCU-Net on a DATASET from fourdcrystal simulate (train split; val split for selection).

    Writes OUT/model.pt (weights) + OUT/model.json (card: sha256, architecture, input pixel
    size in Å⁻¹ and H×W, label normalisation, data hash, metrics), OUT/checkpoint.pt every
    epoch, OUT/metrics.jsonl and OUT/curves.png. Several GPUs or nodes:
    torchrun --nproc_per_node N -m fourdcrystal train DATASET ...
    """
    from pathlib import Path


    cfg = load_explicit("train", config_path, {
        "out": out, "epochs": epochs, "crop_px": crop_px, "batch_size": batch_size, "lr": lr, "schedule": schedule,
        "model.domain": domain, "model.width": width, "model.depth": depth,
        "model.decoders": int(decoders) if decoders else None,
        "model.dropout": dropout, "loss_weighting": loss_weighting, "augment.enabled": False if no_augment else None,
        "loader_workers": loader_workers, "device": device, "seed": seed})
    if summary:
        from ..training.loop import model_summary

        shape = (256, 256)
        if dataset is not None:
            from ..simulation.shards import read_index

            px = read_index(dataset).get("config", {}).get("output_px", 256)
            shape = (px, px)
        s = model_summary(cfg, shape)
        click.echo(f"FCU-Net {s['architecture']} on {shape[0]}×{shape[1]} patterns: {s['parameters']:,} parameters, "
                   f"{s['flops_per_pattern'] / 1e9:.2f} GFLOP per pattern forward (convolutions; FFTs add "
                   f"~{s['fft_flops_estimate'] / 1e9:.3f} GFLOP)")
        return
    if dataset is None:
        raise FourdError("give a DATASET folder (from fourdcrystal simulate)")
    from ..api import train
    from ..settings import TrainSettings

    result = train(dataset, TrainSettings(**cfg), resume=resume, overwrite=overwrite, epochs_this_run=epochs_this_run,
                   init=init)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if not result["finished"]:
        click.echo(f"stopped after epoch {result['epoch']} of {result['epochs']}; continue with the same command "
                   f"and --resume")
        return
    card = result["card"]
    best = card["metrics"]["best_val"]
    click.echo(f"trained {result['epoch']} epochs ({card['training']['stopped_by']}); best epoch "
               f"{card['training']['best_epoch']}: val vg MSE {best.get('val_vg_mse', float('nan')):.4g}, "
               f"val qz wMSE {best.get('val_qz_wmse', float('nan')):.4g}; wrote {Path(result['out']) / 'model.pt'} "
               f"+ model.json")
