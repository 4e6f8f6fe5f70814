"""The baseline's F1 on the validation split at other thresholds (experiment, issue 30; see README.md).

``tune`` gives the model's threshold a strain objective (among the thresholds within ``strain_f1_margin`` of the
best validation F1, the one whose vectors fit the strain survey's tuning series best) and chooses the baseline's
by F1 alone. This scores the baseline at other ``min_relative`` on tune's validation patterns and doses, every
other setting the card's, to see which lie within that margin.

    python experiments/oracle_detection/baseline_f1.py release/dataset --work W --thresholds 0.01,0.005,0.002,0.001 \
        --json experiments/oracle_detection/baseline_f1.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--work", required=True, help="evaluate's reports go to WORK/tT")
    ap.add_argument("--thresholds", default="0.005,0.002,0.001")
    ap.add_argument("--limit", type=int, default=140, help="validation patterns (tune's --limit of the card)")
    ap.add_argument("--json")
    a = ap.parse_args()

    import fourdcrystal.detection.detect as detect
    from fourdcrystal.evaluation.evaluate import EvalConfig, evaluate

    plain = detect.settings_from_card
    rows = {}
    for t in a.thresholds.split(","):
        def patched(card, t=float(t)):
            s, tuned = plain(card)
            return replace(s, baseline=replace(s.baseline, peaks=replace(s.baseline.peaks, min_relative=t))), tuned
        detect.settings_from_card = patched
        try:
            rep = evaluate("release", a.dataset, Path(a.work) / f"t{t}",
                           EvalConfig(split="val", doses_e=(None, 1e5, 1e4), limit=a.limit, tilt=False))
        finally:
            detect.settings_from_card = plain
        f1 = {d: r["f1"] for d, r in rep["by_dose"]["baseline"].items()}
        rows[t] = {"baseline_f1_by_dose": f1, "mean_f1": sum(f1.values()) / len(f1),
                   "precision_by_dose": {d: r["precision"] for d, r in rep["by_dose"]["baseline"].items()}}
        print(t, json.dumps(rows[t]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
