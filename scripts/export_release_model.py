"""Ship a trained model inside the package: fourdcrystal/data/fcunet-release.pt + .json.

    python scripts/export_release_model.py release/model/model.pt release/evaluation/report.json \\
        --config release [--note "trained on ..."]
    python scripts/export_release_model.py release release/evaluation/report.json --card-only

``--card-only`` keeps the shipped weights and rewrites only the test evaluation in their card
(after ``fourdcrystal tune release DATASET`` has stored new peak settings there).

The weights are stored as float16 (half the size; the network runs in float32). The card gets,
besides what `fourdcrystal train` wrote: the data set config (select / supercell / simulate
sections), what the data set holds (patterns and crystals per split, crystal systems,
thicknesses, energies, semi-angles), the test-split evaluation against the classical baseline
(all thicknesses and the thick patterns, clean and at each dose), and where it was trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


from fourdcrystal.config import load_config
from fourdcrystal.simulation import shards
from fourdcrystal.simulation.inspect import all_meta
from fourdcrystal.model.card import RELEASE_WEIGHTS, export_model, read_card, resolve_weights, update_card


def crystal_system(space_group: int) -> str:
    """The crystal system of an International Tables space-group number."""
    for last, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                       (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if space_group <= last:
            return name
    raise ValueError(f"space group {space_group} is not 1-230")


def dataset_contents(folder: Path) -> dict:
    index = shards.read_index(folder)
    meta = all_meta(folder, index, ("split", "crystal_id", "thickness_nominal_A", "energy_eV", "semiangle_mrad",
                                    "zone_axis"))
    crystals = {s: len({c for c, sp in zip(meta["crystal_id"], meta["split"]) if sp == s}) for s in ("train", "val", "test")}
    systems = None
    spec = Path(index.get("specimens", ""))
    for path in (spec / "crystals.json", folder.parent / spec.name / "crystals.json"):
        if path.is_file():
            crystals_json = json.loads(path.read_text())
            used = set(meta["crystal_id"])
            systems = dict(Counter(crystal_system(int(c["space_group_number"]))
                                   for cid, c in crystals_json.items() if cid in used))
            break
    return {"patterns": dict(Counter(meta["split"])), "crystals": crystals, "crystal_systems": systems,
            "thicknesses_A": sorted({float(t) for t in meta["thickness_nominal_A"]}),
            "energies_eV": dict(Counter(f"{e:g}" for e in meta["energy_eV"])),
            "semiangles_mrad": dict(Counter(f"{a:g}" for a in meta["semiangle_mrad"])),
            "zone_axes_distinct": len({tuple(z) for z in meta["zone_axis"]})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model.pt written by fourdcrystal train (its card beside it)")
    ap.add_argument("report", help="report.json of fourdcrystal evaluate on the test split")
    ap.add_argument("--config", help="the config the data set and model were made with (not with --card-only)")
    ap.add_argument("--card-only", action="store_true", help="keep the weights; replace the card's test evaluation")
    ap.add_argument("--note", default="", help="where and how long it was trained, in words")
    ap.add_argument("--out", default=str(RELEASE_WEIGHTS), help="weights path to write (card beside it)")
    args = ap.parse_args(argv)

    weights = resolve_weights(args.model)
    card = read_card(weights)
    report = json.loads(Path(args.report).read_text())
    if report.get("model_weights_sha256") != card["weights_sha256"]:
        sys.exit(f"error: {args.report} evaluates other weights than {args.model}")
    if report.get("settings") != card.get("peaks", {}).get("settings"):
        sys.exit(f"error: {args.report} was made with other peak settings than the card's (run evaluate again)")
    tuned_tilt = (card.get("peaks", {}).get("tilt") or {}).get("settings")
    # the tuned keys must agree; keys tune does not choose (qz_sigma_mrad) take TiltSettings' defaults in both
    if report.get("tilt") and tuned_tilt and {k: report["tilt"]["settings"].get(k) for k in tuned_tilt} != tuned_tilt:
        sys.exit(f"error: {args.report} was made with other tilt settings than the card's (run evaluate again)")
    evaluation = {k: report[k] for k in ("split", "patterns", "by_dose", "thick_from_A", "by_dose_thick",
                                         "by_dose_and_thickness_A", "by_dose_and_thickness_bin", "definitions",
                                         "config", "settings")}
    evaluation.update({k: report[k] for k in ("by_dose_and_energy_kV", "by_dose_and_zone_axis_index",
                                              "by_dose_and_semiangle_mrad", "truth",
                                              "visibility", "vg_label", "tilt") if k in report})
    if args.card_only:
        release = {**card["release"], "test_evaluation": evaluation}
        update_card(weights, "release", release)
        print(f"updated the test evaluation in the card of {weights}")
        return 0
    if not args.config:
        sys.exit("error: --config is required (the config the data set and model were made with)")
    dataset = Path(card["training"]["dataset"])
    extra = {
        "name": Path(args.out).stem,  # fcunet-release
        "release": {
            "dataset_config": {s: load_config(s, args.config) for s in ("select", "supercell", "simulate")},
            "dataset_contents": dataset_contents(dataset),
            "trained_on": args.note,
            "test_evaluation": evaluation,
        },
    }
    out = export_model(args.model, args.out, extra)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, sha256 {out['weights_sha256'][:12]}) and its card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
