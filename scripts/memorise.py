"""Can a network variant learn the reflections at all? Fit it to a few training patterns and watch.

    python scripts/memorise.py DATASET --domain pattern --steps 600
    python scripts/memorise.py DATASET --domain spectral --steps 600

Trains the FCU-Net variant on the train split of DATASET (meant for a handful of patterns, e.g.
`fourdcrystal simulate --config release --limit 9`: 15 training patterns) with no
augmentation and no dropout, AdamW, batches of 3, on the V_g NMSE alone, and prints every 100
steps the NMSE over all those patterns (eval mode; the zero beam alone gives Σ off-zero-beam
label² / Σ label², printed first), the Bragg-peak F1 on them against the V_g label maps (peaks
≥ 5 % of the zero beam, matched within 2 px) and, where the shards hold it, against the physical
truth (`fourdcrystal evaluate`'s exact reflections and visibility rule; the model's peaks read at
the best of a few thresholds in its own unit, so the gate measures the fit, not the threshold).
Printed first: the F1 the true V_g label map itself scores against the physical truth, read the
same way: the ceiling of a network that fits its labels exactly. A variant that cannot memorise
15 patterns will not learn thousands.

Capacity: ``--width``, ``--init WEIGHTS`` (start from a trained model, e.g. ``release``),
``--limit N`` (the first N training patterns of at least ``--min-thickness`` Å), ``--crop C`` (the
central C×C window: cheaper on a large detector) and ``--loss asinh`` (the asinh loss of
``train.vg_loss``) ask whether a network fits the labels of patterns it sees again and again:

    python scripts/memorise.py release/dataset --limit 16 --min-thickness 200 --crop 128 --steps 3000

``--target vg`` or ``--target presence`` fits a target made from the physical truth instead of the
label map (``train.target`` truth_vg / truth_presence): the memorisation gate of docs/model.md,

    python scripts/memorise.py release/dataset --limit 16 --min-thickness 200 --steps 3000 --target presence
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.atomic import write_text_atomic  # noqa: E402
from fourdcrystal.model.fcunet import FCUNet, FCUNetConfig  # noqa: E402
from fourdcrystal.model.losses import vg_asinh_nmse, vg_nmse  # noqa: E402
from fourdcrystal.detection.peaks import PeakConfig, find_peaks, match_peaks  # noqa: E402
from fourdcrystal.simulation import shards  # noqa: E402
from fourdcrystal.model.card import load_model  # noqa: E402
from fourdcrystal.training.data import ShardDataset, open_dataset  # noqa: E402


def peak_f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    cfg = PeakConfig(min_relative=0.05, max_peaks=400)
    tp = n_pred = n_true = 0
    for p, t in zip(pred[:, 0].numpy(), true[:, 0].numpy()):
        pp, tt = find_peaks(p, cfg), find_peaks(t, cfg)
        a, _ = match_peaks(pp.pos_px, tt.pos_px, 2.0)
        tp, n_pred, n_true = tp + len(a), n_pred + len(pp), n_true + len(tt)
    return 2 * tp / max(n_pred + n_true, 1)


TRUTH_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)  # fractions of the zero beam's V_g


def truth_of(dataset: str, locations: list, crop: int | None) -> list:
    """Each pattern's physical truth (``evaluate.ExactTruth``) on the (cropped) grid, or None without truth."""
    from dataclasses import replace

    from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples
    from fourdcrystal.simulation.truth import IGNORED, REQUIRED

    with shards.Shard(Path(dataset) / locations[0][0]) as sh:
        if not sh.has_truth:
            return None
    out = []
    for s in split_samples(None, dataset, locations, EvalConfig(doses_e=(None,))):
        ex, usable = s.exact, s.usable
        if crop:
            i0, j0 = (usable.shape[0] - crop) // 2, (usable.shape[1] - crop) // 2
            usable = usable[i0:i0 + crop, j0:j0 + crop].copy()
            usable[:2], usable[-2:], usable[:, :2], usable[:, -2:] = False, False, False, False  # no peaks at its edge
            ex = replace(ex, px=ex.px - [i0, j0])
            inside = np.all((np.rint(ex.px) >= 0) & (np.rint(ex.px) < crop), axis=1)
            ij = np.clip(np.rint(ex.px).astype(int), 0, crop - 1)
            # required reflections off the crop, or off its scored region, are ignored: no peak can be found there
            off = (~inside | ~usable[ij[:, 0], ij[:, 1]]) & (ex.status == REQUIRED)
            ex.status = np.where(off, IGNORED, ex.status).astype(np.int8)
        out.append((ex, usable))
    return out


def truth_f1(maps: np.ndarray, truths: list) -> dict:
    """F1 of the peaks of ``maps`` (n, H, W) against the physical truth, per threshold of the zero beam's V_g."""
    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings, model_peaks
    from fourdcrystal.evaluation.evaluate import precision_recall_f1, score

    out = {}
    for t in TRUTH_THRESHOLDS:
        st = DetectionSettings(model=ModelPeakSettings(min_relative=t, min_spacing_px=2.0, threshold_of="zero_beam"))
        n = np.zeros(3, int)
        for m, (ex, usable) in zip(maps, truths):
            pk = model_peaks(m[None], m[None], m, st, usable)[0]
            sc = score(pk, ex, 1.0, None, None, None)
            n += (sc["matched"], sc["pred"], sc["true"])
        out[f"{t:g}"] = precision_recall_f1(*n)[2]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--domain", choices=["pattern", "spectral"], default="pattern")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=None, help="channels at the first level [default: the config's]")
    p.add_argument("--init", default=None, help="start from these weights (a model.pt or a shipped name)")
    p.add_argument("--limit", type=int, default=None, help="the first N training patterns")
    p.add_argument("--min-thickness", type=float, default=0.0, help="only patterns at least this thick, Å")
    p.add_argument("--crop", type=int, default=None, help="the central C×C pixels of each pattern")
    p.add_argument("--loss", choices=["nmse", "asinh"], default="nmse")
    p.add_argument("--every", type=int, default=100, help="report every N steps")
    p.add_argument("--target", choices=["label", "vg", "presence"], default="label",
                   help="the V_g label map, or a target from the physical truth: Gaussians at the exact positions of "
                        "the visible reflections, of height |V_g|/|V_0| (vg) or 1 (presence)")
    p.add_argument("--sigma", type=float, default=0.75, help="the truth target's Gaussian width, pixels")
    p.add_argument("--json", default=None, help="also write the settings and the reports to this JSON file")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    _, where, _ = open_dataset(a.dataset)
    locations = where["train"]
    if a.min_thickness > 0:
        thick = {}
        for name in {n for n, _ in locations}:
            with shards.Shard(Path(a.dataset) / name) as sh:
                thick[name] = sh.meta("thickness_nominal_A")
        locations = [(n, r) for n, r in locations if thick[n][r] >= a.min_thickness]
    locations = locations[:a.limit]
    ds = ShardDataset(a.dataset, locations, 1.0)
    items = [ds[i] for i in range(len(ds))]
    cbed, probe, vg = (torch.stack([it[k] for it in items]) for k in ("cbed", "probe", "vg"))
    if a.target != "label":
        from fourdcrystal.simulation.truth import target_map

        maps = []
        for name, row in locations:
            with shards.Shard(Path(a.dataset) / name) as sh:
                maps.append(target_map(sh.reflections(row), tuple(vg.shape[-2:]), sh.meta("k_sampling_invA")[row],
                                       a.sigma, a.target))
        vg = torch.from_numpy(np.stack(maps))[:, None]
    if a.crop:  # the central window; q = 0 stays at (C//2, C//2) for an even crop of an even grid
        i0, j0 = (cbed.shape[-2] - a.crop) // 2, (cbed.shape[-1] - a.crop) // 2
        cbed, probe, vg = (t[..., i0:i0 + a.crop, j0:j0 + a.crop].contiguous() for t in (cbed, probe, vg))
    h, w = vg.shape[-2:]
    off = vg.clone()
    off[..., h // 2, w // 2] = 0
    zero_nmse = float((off**2).sum() / (vg**2).sum())
    print(f"{len(items)} patterns; zero beam alone: NMSE {zero_nmse:.3f}")
    truths = truth_of(a.dataset, locations, a.crop)
    ceiling = truth_f1(vg[:, 0].numpy(), truths) if truths else None
    if ceiling:
        print(f"the target ({a.target}) against the physical truth, F1 by threshold (of the zero beam's V_g): "
              + ", ".join(f"{k} {v:.3f}" for k, v in ceiling.items()), flush=True)
    if a.init:
        model, _ = load_model(a.init)
        for m in model.modules():  # no dropout: memorising, not regularising
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.p = 0.0
        model.train()
    else:
        extra = {"width": a.width} if a.width else {}
        model = FCUNet(FCUNetConfig(domain=a.domain, dropout=0.0, **extra))
    n_par = sum(t.numel() for t in model.parameters())
    print(f"{n_par / 1e6:.2f} M parameters, {tuple(cbed.shape[-2:])} pixels, loss {a.loss}", flush=True)
    loss_fn = vg_nmse if a.loss == "nmse" else (lambda pr, tr: vg_asinh_nmse(pr, tr, 0.02))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    t0 = time.perf_counter()
    reports: list[dict] = []
    for step in range(a.steps + 1):
        pick = torch.randperm(len(items))[:3]
        loss = loss_fn(model(cbed[pick], probe[pick])["vg"], vg[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            model.eval()
            with torch.no_grad():
                pred = model(cbed, probe)["vg"]
            model.train()
            row = {"step": step, "nmse": float(vg_nmse(pred, vg)), "f1": peak_f1(pred, vg),
                   "seconds": time.perf_counter() - t0}
            if truths:
                row["f1_truth_by_threshold"] = truth_f1(pred[:, 0].numpy(), truths)
                row["f1_truth"] = max(row["f1_truth_by_threshold"].values())
            reports.append(row)
            truth_text = f", F1 vs physical truth {row['f1_truth']:.3f}" if truths else ""
            print(f"{a.domain} step {step}: NMSE {row['nmse']:.3f}, F1 vs target {row['f1']:.3f}{truth_text}, "
                  f"{row['seconds']:.0f} s", flush=True)
            if a.json:  # rewritten at every report, so a run stopped early keeps what it measured
                write_text_atomic(Path(a.json), json.dumps(
                    {"command": "python scripts/memorise.py " + " ".join(sys.argv[1:]), "args": vars(a),
                     "patterns": len(items), "pixels": list(cbed.shape[-2:]),
                     "parameters": n_par, "zero_beam_nmse": zero_nmse, "torch_threads": torch.get_num_threads(),
                     "label_map_f1_truth_by_threshold": ceiling,
                     "reports": reports}, indent=1) + "\n")


if __name__ == "__main__":
    main()
