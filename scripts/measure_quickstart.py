"""Run the README's quickstart as a new user would and record what the README says about it.

    python scripts/measure_quickstart.py                      # → benchmarks/quickstart.json
    python scripts/measure_quickstart.py --workdir /tmp/qs    # keep the outputs there

Runs ``fourdcrystal quickstart`` in an empty folder (outside the repository, so it uses the
configs inside the installed package), then the two strain commands the README shows, and
writes: wall and CPU time and the peak memory of the quickstart, the shipped model's and the
baseline's scores on the quickstart's test split, the smoke model's, how many demo-scan positions
reached the peak cap, and the spread of the demo scan's strain maps (an unstrained crystal: the
noise floor). ``scripts/readme_numbers.py`` renders the README's numbers from this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fourdcrystal.quickstart import SHIPPED_EVALUATION
from fourdcrystal.versions import machine

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CAP = 400  # the shipped card's max_peaks, which the quickstart's predict uses


def _run(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the child processes, output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, res.stdout + res.stderr


def _scores(report: dict) -> dict:
    keep = ("f1", "precision", "recall", "position_rms_px", "patterns", "predicted_peaks", "false_peaks_by_kind")
    return {m: {d: {k: s[k] for k in keep if k in s} for d, s in by.items()} for m, by in report["by_dose"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="run here (an empty or new folder) [default: a temporary folder, removed]")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "quickstart.json"))
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fourdcrystal-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("fourdcrystal") or sys.exit("fourdcrystal is not installed in this environment")
    try:
        wall, cpu, _ = _run([exe, "quickstart"], work)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest process, kB → MB
        qs = work / "quickstart"
        shipped = json.loads((qs / SHIPPED_EVALUATION / "report.json").read_text())
        # the smoke model's own evaluation, wherever the quickstart config trains it (quickstart/smoke-model)
        smoke = json.loads(next(qs.glob("*/evaluation/report.json")).read_text())
        with h5py.File(qs / "demo_scan.h5", "r") as f:
            demo = {k: float(f["scan/data"].attrs[k]) for k in ("k_pixel_invA", "energy_eV", "semiangle_mrad")}
        with h5py.File(qs / "demo_scan-bragg.h5", "r") as f:
            counts = {m: np.asarray(f[m]["count"]) for m in ("model", "baseline") if m in f}
        strain = {}
        for method, extra in (("model", ["--out", "demo-strain-model.h5"]),
                              ("baseline", ["--method", "baseline", "--out", "demo-strain-baseline.h5"])):
            _run([exe, "strain", "quickstart/demo_scan-bragg.h5", *extra], work)
            path = work / f"demo-strain-{method}.h5"
            with h5py.File(path, "r") as f:
                ok = np.asarray(f["fit_ok"], bool)
                strain[method] = {k: float(np.nanstd(np.asarray(f[k])[ok]) * 100) for k in ("exx", "eyy", "exy")}
                strain[method]["theta_deg"] = float(np.nanstd(np.asarray(f["theta_deg"])[ok]))
                strain[method]["fitted"] = int(ok.sum())
        record = {
            "command": "fourdcrystal quickstart (in an empty folder), then the README's two strain commands",
            "machine": {**machine(), "python": platform.python_version()},
            "quickstart_wall_s": round(wall, 1), "quickstart_cpu_s": round(cpu, 1),
            "peak_memory_MB": round(peak_mb), "disk_MB": round(sum(p.stat().st_size for p in qs.rglob("*")
                                                                   if p.is_file()) / 1e6),
            "shipped": _scores(shipped), "smoke": _scores(smoke),
            "demo_calibration": demo,
            "demo_positions": int(next(iter(counts.values())).size) if counts else 0,
            "demo_peak_counts": {m: {"median": float(np.median(c)), "max": int(c.max())} for m, c in counts.items()},
            "demo_positions_at_cap": {m: int((c >= CAP).sum()) for m, c in counts.items()},
            "demo_strain_spread": strain,
        }
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps({k: record[k] for k in ("quickstart_wall_s", "quickstart_cpu_s", "peak_memory_MB",
                                                  "disk_MB")}))
        print(f"wrote {args.out}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
