"""Training FCU-Net on a simulated dataset: one process, or many under torchrun (DDP).

The output folder holds:

* ``run.json`` — the config and dataset this run was started with (a resume must match);
* ``checkpoint.pt`` — written atomically after every epoch: weights, optimiser, scheduler,
  grad scaler, RNG state, epoch, history and the best weights so far. ``--resume``
  continues from it and gives the same weights as an uninterrupted run (CPU);
* ``metrics.jsonl`` (one line per epoch) and ``curves.png``;
* at the end, ``model.pt`` + ``model.json``: the best-on-validation weights and their card.

Under torchrun every rank trains on its share of each epoch (DistributedSampler, the same
seed), gradients are averaged by DistributedDataParallel, and only rank 0 writes files. At
the end the ranks compare weight checksums, and the card records that they agreed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..atomic import write_text_atomic
from ..errors import FourdError
from ..model.fcunet import FCUNet, FCUNetConfig, parameter_count
from ..model.losses import MultiTaskLoss
from ..progress import bar
from ..versions import software_versions
from .augment import AugmentConfig
from ..model.card import load_model, save_model, save_state
from .data import ShardDataset, open_dataset, qz_scale

log = logging.getLogger("fourdcrystal")

RUN = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
WEIGHTS = "model.pt"


# --- distributed set-up ---------------------------------------------------------------------


class _Dist:
    """Rank, world size and device of this process (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and self.world > 1:
            device = f"cuda:{local}"
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise FourdError(f"train.device: {device!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FourdError(f"train.device is {device} but this machine has no CUDA GPU; use `device` cpu")
        self.started = False
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend)
            self.started = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's batch-norm running statistics to every rank (DDP does it before each forward,
        but after the last step of an epoch each rank holds statistics of its own batch)."""
        if self.world > 1:
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.started:
            torch.distributed.destroy_process_group()


# --- schedule -------------------------------------------------------------------------------


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    s = step + 1
    if warmup_steps > 0 and s <= warmup_steps:
        return s / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "noam":  # Vaswani et al.: ∝ 1/sqrt(step) after warm-up, continuous at its end
        return math.sqrt(max(warmup_steps, 1) / s)
    done = (s - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


# --- helpers --------------------------------------------------------------------------------


def _run_record(cfg: dict, info) -> dict:
    keep = {k: v for k, v in cfg.items() if k not in ("out", "loader_workers", "device")}
    return {"config": keep, "dataset_index_sha256": info.index_sha256}


def _checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
            raise ValueError("missing model or epoch")
        return ckpt
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise FourdError(f"{path}: corrupted or unreadable checkpoint ({type(exc).__name__}); "
                         f"delete it to start again, or train into a new `out`") from None


def _prepare_out(out: Path, record: dict, resume: bool, overwrite: bool, dist: _Dist) -> dict | None:
    """Create/check the output folder; return the checkpoint to resume from, if any."""
    run_path, ckpt_path = out / RUN, out / CHECKPOINT
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for stray in out.glob(".*.tmp"):  # a killed writer's leftovers
            stray.unlink(missing_ok=True)
    dist.barrier()
    existing = None
    if run_path.exists():
        try:
            existing = json.loads(run_path.read_text())
        except (OSError, ValueError):
            existing = None
    if resume:
        if not ckpt_path.exists():
            raise FourdError(f"`resume`: {ckpt_path} not found; nothing to resume (drop `resume` to start)")
        if existing is not None and existing != record:
            changed = sorted(k for k in set(existing["config"]) | set(record["config"])
                             if existing["config"].get(k) != record["config"].get(k))
            what = f"config keys {', '.join(changed)}" if changed else "the dataset (index.json changed)"
            raise FourdError(f"`resume`: {out} was trained with another configuration ({what} differ); "
                             f"resume with the same config, or train into a new `out`")
        return _load_checkpoint(ckpt_path)
    if (ckpt_path.exists() or (out / WEIGHTS).exists()) and not overwrite:
        raise FourdError(f"{out} already holds a training run; pass `resume` to continue it or `overwrite` to start over")
    dist.barrier()
    if dist.main:
        for name in (CHECKPOINT, METRICS, CURVES, WEIGHTS, Path(WEIGHTS).with_suffix(".json").name):
            (out / name).unlink(missing_ok=True)
        write_text_atomic(run_path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    dist.barrier()
    return None


def _write_metrics(out: Path, history: list[dict], plot: bool = True) -> None:
    write_text_atomic(out / METRICS, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
    if not plot:
        return
    try:
        from ..plots import training_curves

        training_curves(history, out / CURVES, title=f"{out.name}: training curves")
    except Exception as exc:  # a plot must never stop a training run
        log.warning("could not draw %s: %s", out / CURVES, exc)


class _EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) keys so persistent loader workers learn the epoch with every sample."""

    def __init__(self, inner: DistributedSampler):
        self.inner, self.epoch = inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self):
        return ((self.epoch, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def _loader(ds, sampler, batch_size: int, workers: int, pin: bool) -> DataLoader:
    # Its own generator: worker seeds must not consume the global RNG (dropout), or a resumed
    # run would draw different dropout masks from an uninterrupted one.
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                      drop_last=False, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


class _Step(nn.Module):
    """Network plus loss as one module, so DDP also averages the learned task weights' gradients."""

    def __init__(self, net: nn.Module, loss: MultiTaskLoss):
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.loss(self.net(batch["cbed"], batch["probe"]), batch)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}


def autocast(device: torch.device, amp: bool):
    """Mixed precision for training on a GPU (bf16 where supported, else fp16) when ``amp``; else no-op."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


@dataclass
class _Totals:
    """Sums over the samples seen (a value times its sample count), summed over ranks by :meth:`reduced`."""

    loss: float = 0.0
    vg_mse: float = 0.0
    qz_wmse: float = 0.0
    vg_nmse: float = 0.0
    vg_asinh: float = 0.0
    samples: float = 0.0

    def add(self, n: float, **values: float) -> None:
        for name, value in values.items():
            setattr(self, name, getattr(self, name) + value * n)
        self.samples += n

    def reduced(self, dist: _Dist) -> _Totals:
        return _Totals(*dist.all_sum([getattr(self, f.name) for f in fields(self)]))

    def mean(self, name: str) -> float:
        return getattr(self, name) / max(self.samples, 1.0)


def evaluate_split(model: nn.Module, ds: ShardDataset, dist: _Dist, batch_size: int, weights: tuple[float, float],
                   amp: bool = False, vg_loss: str = "nmse", qz_min_vg: float = 0.0,
                   vg_asinh_scale: float = 0.02) -> dict:
    """Mean vg MSE and NMSE, V_g-weighted qz MSE, and the weighted sum of the vg term (``vg_loss``) and the
    qz term over a split (shared out among ranks)."""
    from ..model.losses import qz_weighted_mse, vg_asinh_nmse, vg_mse, vg_nmse

    model.eval()
    mine = list(range(dist.rank, len(ds), dist.world))
    totals = _Totals()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            items = [ds[i] for i in mine[start:start + batch_size]]
            batch = _to({k: torch.stack([it[k] for it in items]) for k in items[0]}, dist.device)
            with autocast(dist.device, amp):
                pred = model(batch["cbed"], batch["probe"])
            for j in range(len(items)):
                extra = ({"vg_asinh": float(vg_asinh_nmse(pred["vg"][j], batch["vg"][j], vg_asinh_scale))}
                         if vg_loss == "asinh" else {})  # only the asinh runs select on it
                totals.add(1.0, vg_mse=float(vg_mse(pred["vg"][j], batch["vg"][j])),
                           qz_wmse=float(qz_weighted_mse(pred["qz"][j], batch["qz"][j], batch["vg"][j],
                                                         min_vg=qz_min_vg)),
                           vg_nmse=float(vg_nmse(pred["vg"][j], batch["vg"][j])), **extra)
    totals = totals.reduced(dist)
    vg, qz, nmse = totals.mean("vg_mse"), totals.mean("qz_wmse"), totals.mean("vg_nmse")
    term = {"nmse": nmse, "asinh": totals.mean("vg_asinh")}.get(vg_loss, vg)
    return {"vg_mse": vg, "vg_nmse": nmse, "qz_wmse": qz, "loss": weights[0] * term + weights[1] * qz,
            "samples": int(max(totals.samples, 1.0))}


# --- the run --------------------------------------------------------------------------------


def train_model(dataset: str | Path, cfg: dict, resume: bool = False, overwrite: bool = False,
                epochs_this_run: int | None = None, init: str | Path | None = None) -> dict:
    """Train on the train split of ``dataset``, select on its val split; return a summary.

    ``cfg`` is the validated ``train:`` config section. ``epochs_this_run`` stops after that
    many epochs (a job time limit); ``--resume`` continues. ``init`` starts from a trained
    model's weights (fine-tuning); it must have the same architecture.
    """
    dist = _Dist(cfg["device"])
    try:
        return _train(Path(dataset), cfg, dist, resume, overwrite, epochs_this_run, init)
    finally:
        dist.close()


def _train(dataset: Path, cfg: dict, dist: _Dist, resume: bool, overwrite: bool, epochs_this_run: int | None,
           init) -> dict:
    out = Path(cfg["out"])
    where, info, mcfg, init_model = _check_inputs(dataset, cfg, init)
    record = _run_record(cfg, info)
    from ..atomic import check_writable

    check_writable(out, "model")
    ckpt = _prepare_out(out, record, resume, overwrite, dist)
    run = _build(dataset, cfg, dist, where, mcfg, init_model)
    start_epoch, history, best = _restore(run, ckpt, dist) if ckpt is not None else (0, [], _Best())
    if ckpt is not None and dist.main:
        log.info("resuming %s after epoch %d of %d", out, start_epoch, cfg["epochs"])

    step: nn.Module = _Step(torch.compile(run.model) if cfg["compile"] else run.model, run.loss_fn)
    if dist.world > 1:
        step = nn.parallel.DistributedDataParallel(step, device_ids=[dist.device.index] if dist.device.type == "cuda"
                                                   else None)
    epoch_sampler = _EpochSampler(run.sampler)
    loader = _loader(run.train_ds, epoch_sampler, cfg["batch_size"], cfg["loader_workers"],
                     dist.device.type == "cuda")
    stop_reason = None
    ran, drawn = 0, -math.inf
    for epoch in range(start_epoch, cfg["epochs"]):
        if epochs_this_run is not None and ran >= epochs_this_run:
            stop_reason = "epochs_this_run"
            break
        if cfg["patience"] and best.epoch >= 0 and epoch - 1 - best.epoch >= cfg["patience"]:
            stop_reason = "early_stopping"
            break
        row = _run_epoch(run, step, loader, epoch_sampler, epoch, cfg, dist)
        _check_finite(run.model, row, epoch, out)  # before the checkpoint: the last finite epoch's is kept
        history.append(row)
        score = row["val_" + cfg.get("select_on", "loss")]
        if score < best.loss:
            best = _Best(score, epoch, {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()})
        if dist.main:
            _save_checkpoint(out, run, epoch, history, best, dist.device.type == "cuda")
            # the PNG at most every 10 s (epochs of a tiny run take less than drawing it) and at the end
            last = epoch + 1 == cfg["epochs"] or (epochs_this_run is not None and ran + 1 >= epochs_this_run)
            plot = last or time.perf_counter() - drawn >= 10.0
            _write_metrics(out, history, plot)
            drawn = time.perf_counter() if plot else drawn
            log.info("epoch %d/%d: train loss %.4g, val vg MSE %.4g (NMSE %.3g), val qz wMSE %.4g, %.1f patterns/s",
                     epoch + 1, cfg["epochs"], row["train_loss"], row["val_vg_mse"], row["val_vg_nmse"],
                     row["val_qz_wmse"], row["samples_per_s"])
        dist.barrier()
        ran += 1
    else:
        stop_reason = "epochs"
    if dist.main and history and stop_reason == "early_stopping":
        _write_metrics(out, history)
    if stop_reason == "epochs_this_run":
        return {"finished": False, "epoch": len(history), "epochs": cfg["epochs"], "out": str(out)}

    # the ranks must hold the same weights: DDP averages gradients, so any drift is a bug
    digest = _checksum(run.model)
    agreed = True
    if dist.world > 1:
        digests: list = [None] * dist.world
        torch.distributed.all_gather_object(digests, digest)
        agreed = len(set(digests)) == 1
        if not agreed:
            raise RuntimeError(f"ranks hold different weights after training: {digests}")
    card = _card(dataset, cfg, run, info, mcfg, record, history, best, stop_reason, dist, agreed)
    if dist.main:
        card = save_model(out / WEIGHTS, best.state if best.state is not None else run.model.state_dict(), card)
    dist.barrier()
    return {"finished": True, "epoch": len(history), "epochs": cfg["epochs"], "out": str(out), "card": card,
            "final_weights_sha256": digest}


def _check_finite(model: nn.Module, row: dict, epoch: int, out: Path) -> None:
    """One line when an epoch left non-finite weights or losses (a learning rate far too high, say): a model
    that predicts NaN would otherwise be saved and later find nothing, exit 0."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    losses = [k for k in ("train_loss", "val_loss") if not math.isfinite(float(row.get(k, 0.0)))]
    if bad or losses:
        what = f"{len(bad)} weight tensors" if bad else " and ".join(losses)
        raise FourdError(f"training diverged in epoch {epoch + 1}: {what} not finite (lower `lr` or train.grad_clip); "
                         f"nothing of this epoch was saved, {out} keeps the last finite checkpoint")


def _check_inputs(dataset: Path, cfg: dict, init) -> tuple[dict, object, FCUNetConfig, nn.Module | None]:
    """The dataset's splits and shape, the architecture, and the model to start from; every check here runs
    before the output folder exists."""
    _, where, info = open_dataset(dataset)
    for split in ("train", "val"):
        if not where[split]:
            raise FourdError(f"{dataset}: the {split} split is empty ({info.split_counts[split]} samples); "
                             f"simulate more crystals or raise {split}_fraction in simulate")
    mcfg = FCUNetConfig(**cfg["model"])
    h, w = info.shape
    if h % 2**mcfg.depth or w % 2**mcfg.depth or (h & (h - 1)) or (w & (w - 1)):
        raise FourdError(f"{dataset}: patterns are {h}×{w}; FCU-Net needs powers of two divisible by "
                         f"2^depth = {2**mcfg.depth} (simulate with `output_px` 256, or lower `model.depth`)")
    crop = cfg.get("crop_px")
    if crop is not None and mcfg.coords:
        raise FourdError("`crop_px` with train.model.coords: a crop moves q = 0 off its centre, and the coordinate "
                         "channels measure from the centre; use one or the other")
    if crop is not None and (crop > min(h, w) or crop % 2**mcfg.depth):
        raise FourdError(f"`crop_px` (train.crop_px) {crop}: expected a multiple of 2^depth = {2**mcfg.depth} no larger than the "
                         f"{h}×{w} patterns")
    check_memory(cfg, mcfg.width, (h, w))
    if cfg.get("target", "label") != "label":  # a truth target needs the truth in every shard trained on
        from ..evaluation.evaluate import require_truth

        require_truth(dataset, where["train"] + where["val"])
    init_model = None
    if init is not None:
        init_model, init_card = load_model(init)
        if init_model.config != mcfg:
            raise FourdError(f"`init` {init}: architecture {init_model.config.as_dict()} differs from "
                             f"train.model {mcfg.as_dict()}")
        # no shape check: the network is convolutional and its probe correlation works on any window, so
        # weights trained on 128² patterns start a run on 256² ones (the card records the new shape)
    return where, info, mcfg, init_model


def check_memory(cfg: dict, width: int, shape: tuple[int, int]) -> None:
    """Refuse, before the output exists, a batch whose training step would not fit in memory: the network's
    forward and backward pass on the (cropped) training patterns, or its forward pass on the whole validation
    patterns, whichever is larger, and the patterns the loader workers hold (two batches each of pattern, probe,
    V_g and q_z, float32)."""
    from ..memory import check_fits, network_bytes

    full = shape[0] * shape[1]
    crop = cfg.get("crop_px")
    b = cfg["batch_size"]
    step = max(network_bytes(b, crop * crop if crop else full, width, training=True), network_bytes(b, full, width))
    loaders = (cfg["loader_workers"] + 1) * 2 * b * 4 * 4 * full
    check_fits(1.25 * (step + loaders), f"train with batch size {b} on {shape[0]}×{shape[1]} patterns"
               + (f" (crops of {crop}²)" if crop else "") + f" and model width {width}",
               "lower `batch_size`, train on crops (`crop_px`), or lower `model.width`")


@dataclass
class _Best:
    """The best validation score so far (train.select_on), its epoch (0-based; −1: none yet) and the weights then."""

    loss: float = math.inf
    epoch: int = -1
    state: dict | None = None


@dataclass
class _Run:
    """Everything an epoch needs: data, network, loss, optimiser and schedule."""

    cfg: dict
    scale: float
    train_ds: ShardDataset
    val_ds: ShardDataset
    model: nn.Module
    loss_fn: MultiTaskLoss
    params: list
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: DistributedSampler
    use_amp: bool


def _build(dataset: Path, cfg: dict, dist: _Dist, where: dict, mcfg: FCUNetConfig, init_model) -> _Run:
    """Datasets, network, loss, optimiser, schedule; the seed is set first, so a run draws the same weights,
    sample order and augmentation every time."""
    seed = cfg["seed"]
    torch.manual_seed(seed)
    scale = qz_scale(dataset, where["train"], seed=seed)
    aug = AugmentConfig.from_dict(cfg["augment"]) if cfg["augment"]["enabled"] else None
    target = {"target": cfg.get("target", "label"), "target_sigma_px": cfg.get("target_sigma_px", 0.75)}
    train_ds = ShardDataset(dataset, where["train"], scale, augment=aug, seed=seed, crop_px=cfg.get("crop_px"),
                            **target)
    # with val_augment the validation patterns get the training's noise, drawn once (epoch 0 of a fixed seed), so
    # every epoch is scored on the same noisy patterns
    val_ds = ShardDataset(dataset, where["val"], scale, augment=aug if cfg.get("val_augment") else None,
                          seed=seed + 1, **target)
    model = FCUNet(mcfg)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    model.to(dist.device)
    loss_fn = MultiTaskLoss(cfg["loss_weighting"], cfg["vg_weight"], cfg["qz_weight"], cfg["vg_peak_weight"],
                            cfg["vg_loss"], cfg["qz_min_vg"], cfg["vg_asinh_scale"]).to(dist.device)
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sampler = DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg["batch_size"])
    total = steps_per_epoch * cfg["epochs"]
    warm = int(round(cfg["warmup_epochs"] * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total, cfg["schedule"]))
    use_amp = cfg["amp"] and dist.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    return _Run(cfg, scale, train_ds, val_ds, model, loss_fn, params, opt, sched, scaler, sampler, use_amp)


def _restore(run: _Run, ckpt: dict, dist: _Dist) -> tuple[int, list[dict], _Best]:
    """Load a checkpoint into the run; the first epoch still to do, the history and the best so far."""
    run.model.load_state_dict(ckpt["model"])
    run.loss_fn.load_state_dict(ckpt["loss"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if dist.device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"][min(dist.rank, len(ckpt["rng_cuda"]) - 1)], dist.device)
    best = _Best(float(ckpt["best_loss"]), int(ckpt["best_epoch"]), ckpt["best_model"])
    return int(ckpt["epoch"]) + 1, list(ckpt["history"]), best


def _run_epoch(run: _Run, step: nn.Module, loader: DataLoader, epoch_sampler: _EpochSampler, epoch: int, cfg: dict,
               dist: _Dist) -> dict:
    """One pass over the train split, then the validation split; the epoch's row of the history."""
    t0 = time.perf_counter()
    step.train()
    epoch_sampler.set_epoch(epoch)
    totals = _Totals()
    with bar(total=len(run.sampler) * dist.world, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="pattern",
             disable=not dist.main) as pbar:
        for batch in loader:
            batch = _to(batch, dist.device)
            with autocast(dist.device, run.use_amp):
                loss, parts = step(batch)
            run.opt.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            if cfg["grad_clip"] > 0:
                run.scaler.unscale_(run.opt)
                torch.nn.utils.clip_grad_norm_(run.params, cfg["grad_clip"])
            run.scaler.step(run.opt)
            run.scaler.update()
            run.sched.step()
            n = batch["cbed"].shape[0]
            # one device-to-host copy per step, not three
            value, vg, qz, nmse = torch.stack([loss.detach(), parts["vg_mse"], parts["qz_wmse"],
                                               parts["vg_nmse"]]).tolist()
            totals.add(n, loss=value, vg_mse=vg, qz_wmse=qz, vg_nmse=nmse)
            pbar.update(n * dist.world)
            pbar.set_postfix(loss=f"{value:.4g}")
    totals = totals.reduced(dist)
    dist.sync_buffers(run.model)
    train_seconds = time.perf_counter() - t0
    val = evaluate_split(run.model, run.val_ds, dist, cfg["batch_size"], (cfg["vg_weight"], cfg["qz_weight"]),
                         run.use_amp, cfg["vg_loss"], cfg["qz_min_vg"], cfg["vg_asinh_scale"])
    row = {"epoch": epoch + 1, "train_loss": totals.mean("loss"), "train_vg_mse": totals.mean("vg_mse"),
           "train_vg_nmse": totals.mean("vg_nmse"), "train_qz_wmse": totals.mean("qz_wmse"),
           "val_loss": val["loss"], "val_vg_mse": val["vg_mse"], "val_vg_nmse": val["vg_nmse"],
           "val_qz_wmse": val["qz_wmse"], "lr": run.opt.param_groups[0]["lr"],
           "samples_per_s": totals.samples / train_seconds, "seconds": time.perf_counter() - t0}
    if run.loss_fn.log_var is not None:
        row["task_weights"] = [float(x) for x in torch.exp(-run.loss_fn.log_var.detach().cpu())]
    return row


def _save_checkpoint(out: Path, run: _Run, epoch: int, history: list[dict], best: _Best, cuda: bool) -> None:
    save_state(out / CHECKPOINT, {
        "model": run.model.state_dict(), "loss": run.loss_fn.state_dict(), "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if cuda else None,
        "epoch": epoch, "history": history, "best_loss": best.loss, "best_epoch": best.epoch,
        "best_model": best.state})


def _card(dataset: Path, cfg: dict, run: _Run, info, mcfg: FCUNetConfig, record: dict, history: list[dict],
          best: _Best, stop_reason: str, dist: _Dist, agreed: bool) -> dict:
    """The model card: architecture, the input it expects, label scales, training data and metrics."""
    return {
        "name": Path(cfg["out"]).name, "architecture": mcfg.as_dict(), "parameters": parameter_count(run.model),
        "input": {"shape": list(info.shape), "k_sampling_invA": info.k_sampling_invA, "energy_eV": info.energy_eV,
                  "semiangle_mrad": info.semiangle_mrad,
                  "range": {"k_sampling_invA": list(info.k_sampling_range_invA), "energy_eV": list(info.energy_range_eV),
                            "semiangle_mrad": list(info.semiangle_range_mrad)},
                  "conventions": "cbed and probe (H, W) with q = 0 at (H//2, W//2); overall intensity is free"},
        "labels": {"vg": "relative: V_g divided by its zero-beam value (the q = 0 pixel)",
                   "qz": "Å⁻¹ after multiplying the output by qz_scale_invA", "qz_scale_invA": run.scale},
        "training": {"dataset": str(dataset), "dataset_index_sha256": info.index_sha256,
                     "split_counts": info.split_counts, "config": record["config"], "seed": cfg["seed"],
                     "epochs_run": len(history), "stopped_by": stop_reason, "best_epoch": best.epoch + 1,
                     "world_size": dist.world, "ranks_identical_weights": agreed, "device": str(dist.device)},
        "metrics": {"best_val": next((h for h in history if h["epoch"] == best.epoch + 1), {}),
                    "last": history[-1] if history else {}},
        "software": software_versions(),
    }


def model_summary(cfg: dict, shape: tuple[int, int]) -> dict:
    """Parameter count and forward FLOPs per pattern (convolutions and matrix products; FFTs excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = FCUNet(FCUNetConfig(**cfg["model"])).eval()
    x = torch.rand(1, 1, *shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, x)
    h, w = shape
    fft_flops = 5 * h * w * math.log2(h * w) * (3 + (cfg["model"]["decoders"] * 2))  # rough, for the record
    return {"parameters": parameter_count(model), "flops_per_pattern": int(counter.get_total_flops()),
            "fft_flops_estimate": int(fft_flops), "shape": list(shape), "architecture": cfg["model"]}
