"""Benchmark: training samples/s, inference patterns/s and the data loader's own rate.

    python scripts/bench_train.py quickstart/dataset            # default model (train: section defaults)
    python scripts/bench_train.py DATASET --width 8 --device cuda --batch-size 32 --amp

The loader is timed alone (augmentation on, --loader-workers processes) and must deliver at
least twice what the training step consumes; the script prints the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.config import load_config  # noqa: E402
from fourdcrystal.model.fcunet import FCUNet, FCUNetConfig, parameter_count  # noqa: E402
from fourdcrystal.model.losses import MultiTaskLoss  # noqa: E402
from fourdcrystal.training.augment import AugmentConfig  # noqa: E402
from fourdcrystal.training.data import ShardDataset, open_dataset, qz_scale  # noqa: E402
from fourdcrystal.training.loop import autocast  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", default="quickstart/dataset")
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--decoders", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()

    cfg = load_config("train", None, {"model.width": a.width, "model.depth": a.depth, "model.decoders": a.decoders})
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    _, where, info = open_dataset(a.dataset)
    scale = qz_scale(a.dataset, where["train"])
    ds = ShardDataset(a.dataset, where["train"], scale, augment=AugmentConfig.from_dict(cfg["augment"]))
    print(f"device {device}, torch threads {torch.get_num_threads()}, patterns {info.shape[0]}×{info.shape[1]}, "
          f"{len(ds)} training samples")

    # 1. the loader alone
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.loader_workers,
                                         persistent_workers=a.loader_workers > 0, drop_last=True)
    for _ in loader:  # start the workers, warm the page cache
        break
    t = time.perf_counter()
    n = 0
    for _ in range(2):
        for batch in loader:
            n += batch["cbed"].shape[0]
    loader_rate = n / (time.perf_counter() - t)
    print(f"data loader ({a.loader_workers} workers, augmentation on): {loader_rate:.1f} samples/s")

    # 2. training step and 3. inference on fixed batches (the loader is not in the way)
    model = FCUNet(FCUNetConfig(**cfg["model"])).to(device)
    print(f"model {cfg['model']}: {parameter_count(model):,} parameters")
    net = torch.compile(model) if a.compile else model
    loss_fn = MultiTaskLoss(cfg["loss_weighting"]).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    items = [ds[i % len(ds)] for i in range(a.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]).to(device) for k in ("cbed", "probe", "vg", "qz")}
    model.train()
    for i in range(a.steps + 2):
        if i == 2:
            _sync(device)
            t = time.perf_counter()
        with autocast(device, a.amp):
            loss, _ = loss_fn(net(batch["cbed"], batch["probe"]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    train_rate = a.steps * a.batch_size / (time.perf_counter() - t)
    print(f"training: {train_rate:.2f} samples/s (batch {a.batch_size})")

    model.eval()
    with torch.no_grad():
        for i in range(a.steps + 2):
            if i == 2:
                _sync(device)
                t = time.perf_counter()
            with autocast(device, a.amp):
                net(batch["cbed"], batch["probe"])
        _sync(device)
    infer_rate = a.steps * a.batch_size / (time.perf_counter() - t)
    print(f"inference: {infer_rate:.2f} patterns/s (batch {a.batch_size})")
    ratio = loader_rate / train_rate
    print(f"loader / training consumption = {ratio:.1f}x ({'OK' if ratio >= 2 else 'TOO SLOW'}: target >= 2x)")


if __name__ == "__main__":
    main()
