"""Print the test evaluation stored in a model card as the Markdown table the README shows.

    python scripts/card_table.py                 # the shipped model's card
    python scripts/card_table.py model/model.pt  # any model evaluated and exported with its report

Rows: every thickness bin and the ≥ thick_from group, at every dose, model beside the tuned
baseline: F1, precision, recall, rms position error (px, Å⁻¹), mean radial offset (px),
Pearson r of peak heights with the true V_g. Also the tuned settings of both methods.
"""

from __future__ import annotations

import argparse

from fourdcrystal.evaluation.evaluate import dose_name, thickness_bins
from fourdcrystal.model.card import read_card, resolve_weights


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=None, help="model.pt with its card [default: the shipped model]")
    card = read_card(resolve_weights(ap.parse_args(argv).model))
    ev = card["release"]["test_evaluation"]
    doses = [dose_name(d) for d in ev["config"]["doses_e"]]
    groups = [(b, {m: {d: ev["by_dose_and_thickness_bin"][m][d][b] for d in doses} for m in ("model", "baseline")})
              for b in thickness_bins() if b in ev["by_dose_and_thickness_bin"]["model"][doses[0]]]
    groups.append((f">={ev['thick_from_A']:g} Å", {m: {d: ev["by_dose_thick"][m][d] for d in doses}
                                                          for m in ("model", "baseline")}))
    print("| thickness | dose (e) | method | F1 | precision | recall | rms position error | radial offset | "
          "intensity r |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, table in groups:
        for dose in table["model"]:
            m, b = table["model"][dose], table["baseline"][dose]
            for method, r in (("model", m), ("baseline", b)):
                other = b if method == "model" else m
                f1 = f"**{r['f1']:.3f}**" if r["f1"] > other["f1"] else f"{r['f1']:.3f}"
                print(f"| {name} | {dose} | {method} | {f1} | {r['precision']:.3f} | {r['recall']:.3f} | "
                      f"{r['position_rms_px']:.2f} px, {r['position_rms_invA']:.4f} Å⁻¹ | "
                      f"{r['radial_offset_px']:+.3f} px | {r['intensity_pearson_r']:.2f} |")
    st = card["peaks"]["settings"]
    print(f"\nmodel peaks: {st['model']}\nbaseline: {st['baseline']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
