"""`fourdcrystal supercell`."""

from __future__ import annotations

import click

from ..errors import FourdError
from .common import config_option, load_explicit, opt, parse_strain_pct
from .group import cli


@cli.command("supercell")
@click.argument("catalogue", required=False, type=click.Path())
@config_option("supercell")
@opt("supercell", "out", "--out", type=click.Path(file_okay=False), help="Specimens folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing specimens folder.")
@opt("supercell", "zone_axes_per_crystal", "--zone-axes", type=int, help="Zone axes per crystal.")
@opt("supercell", "max_index", "--max-index", type=int, help="Largest |u|,|v|,|w| of a zone axis [uvw].")
@click.option("--axis-choice", type=click.Choice(["shortest", "random"]), help="Lowest-index axes first, or random.")
@click.option("--all-axes", is_flag=True, default=None, help="Keep symmetry-equivalent zone axes too.")
@opt("supercell", "phi_deg", "--phi", "phi_range", help="In-plane rotation range in degrees, MIN,MAX.")
@opt("supercell", "tilt_mrad_max", "--tilt-max", type=float, help="Largest out-of-plane tilt in mrad (≤ 50).")
@opt("supercell", "tilt_mode", "--tilt-mode", type=click.Choice(["beam", "atoms"]),
              help="beam: the probe is tilted, the slab stays periodic; atoms: the crystal is rotated.")
@opt("supercell", "lateral_size_A", "--lateral-size", help="Lateral box size in Å, one value or MIN,MAX.")
@opt("supercell", "thicknesses_A", "--thickness", help="Thickness series in Å, comma-separated.")
@opt("supercell", "strain_tol", "--strain-tol", type=float, help="Largest strain to make a cell orthogonal.")
@opt("supercell", "strain_pct", "--strain-pct",
              help="Applied in-plane strain in %: S draws each of exx, eyy, exy from [-S, S] per specimen; "
                   "EXX,EYY,EXY is fixed. Shear makes a cut box.")
@opt("supercell", "seed", "--seed", type=int, help="Random seed.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip crystals/axes that cannot be built.")
@click.option("--preview", "preview_id", help="Write a PNG of this specimen's projected structure (OUT/preview-ID.png).")
@click.pass_context
def supercell_cmd(ctx, catalogue, config_path, out, overwrite, zone_axes, max_index, axis_choice, all_axes, phi_range,
                  tilt_max, tilt_mode, lateral_size, thickness, strain_tol, strain_pct, seed, skip_bad,
                  preview_id) -> None:
    """Plan oriented specimens from a CATALOGUE folder into a specimen manifest.

    Each specimen: a crystal, a zone axis [uvw] along the beam, an in-plane rotation φ (deg),
    a small tilt (θx, θy) in mrad, a lateral box (Å), a thickness series (Å) and optionally a
    homogeneous in-plane strain (ε_xx, ε_yy, ε_xy in %, specimen frame). Writes
    OUT/specimens.csv, OUT/crystals.json and OUT/manifest.json. With --preview ID (and no
    CATALOGUE, or an existing OUT) it draws that specimen seen down the beam.
    """
    from pathlib import Path

    from ..plots import specimen_preview
    from ..specimens.specimen import axis_text
    from ..api import supercell
    from ..settings import SupercellSettings
    from ..specimens.supercell import load_specimen, read_specimens, summary

    cfg = load_explicit("supercell", config_path, {
        "out": out, "zone_axes_per_crystal": zone_axes, "max_index": max_index, "axis_choice": axis_choice,
        "drop_equivalent": (False if all_axes else None), "phi_deg": phi_range, "tilt_mrad_max": tilt_max,
        "tilt_mode": tilt_mode, "lateral_size_A": lateral_size, "thicknesses_A": thickness,
        "strain_tol": strain_tol, "seed": seed, "skip_bad": skip_bad, "strain_pct": parse_strain_pct(strain_pct),
    })
    out_dir = Path(cfg["out"])
    if catalogue is not None and not (preview_id and out_dir.exists() and not overwrite):
        planned = supercell(catalogue, SupercellSettings(**cfg), overwrite=overwrite)
        click.echo(summary(planned["rows"], planned["header"]))
        click.echo(f"wrote {out_dir / 'specimens.csv'}")
    elif not preview_id:
        raise FourdError("give a CATALOGUE folder to plan specimens (or --preview ID to draw one)")
    if preview_id:
        specimens = read_specimens(out_dir)
        sp = load_specimen(specimens, preview_id)
        row = specimens.row(preview_id)
        title = (f"{row.formula} ({row.prototype}) {axis_text(row.zone_axis)}, "
                 f"φ = {sp.plan.phi_deg:.2f}°, tilt = ({row.tilt_mrad[0]:.1f}, {row.tilt_mrad[1]:.1f}) mrad "
                 f"({row.tilt_mode}),\n{sp.plan.mode} cell, box {sp.plan.box_A[0]:.1f} × {sp.plan.box_A[1]:.1f} Å, "
                 f"thickness {sp.thickness_A:g} Å, {len(sp.atoms)} atoms")
        path = specimen_preview(sp, title, out_dir / f"preview-{preview_id}.png")
        click.echo(f"wrote {path}")
