"""`fourdcrystal strain`."""

from __future__ import annotations

import logging

import click

from .common import config_option, load, opt, parse_pair
from .group import cli, options_named

log = logging.getLogger("fourdcrystal")


@cli.command("strain")
@click.argument("vectors", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Strain maps HDF5 (a PNG beside it). [default: VECTORS's name with -strain.h5]")
@config_option("strain")
@opt("strain", "method", "--method", type=click.Choice(["auto", "model", "baseline"]),
     help="Which vectors of a predict result: auto, the ones predict chose (--method there); the model's; or the "
           "classical baseline's.")
@opt("strain", "reference", "--reference",
              help="Unstrained reference: median (the median lattice of the scan), a scan region R0:R1,C0:C1 (rows, "
                   "columns; end exclusive; its median lattice), or crystal (the lattice of --structure along "
                   "--zone-axis: absolute strain, as good as the pixel-size calibration; with vectors that carry "
                   "the tilt, predict --tilt, also the 3D orientation per position).")
@click.option("--structure", type=click.Path(), help="With --reference crystal: the crystal's CIF/POSCAR file.")
@click.option("--zone-axis", type=int, nargs=3, help="With --reference crystal: the zone axis U V W, direction indices of the "
                                                        "structure file's cell where that is a conventional cell, else "
                                                        "of the standard conventional cell.")
@click.option("--g1", help="First reciprocal basis vector QX,QY in the file's units (Å⁻¹). [default: found from the "
                           "Bragg vector map]")
@click.option("--g2", help="Second reciprocal basis vector QX,QY (Å⁻¹); with --g1.")
@opt("strain", "tolerance", "--tolerance", type=float,
              help="Index a vector when it lies within this fraction of |shortest g| of a lattice point.")
@opt("strain", "min_vectors", "--min-vectors", type=int,
              help="Positions with fewer indexed vectors (zero beam included) are not fitted (NaN, grey).")
@opt("strain", "scan_step_nm", "--scan-step", type=float,
     help="Scan step in nm: the maps' axes in nm.",
     default_text="the data file's real-space calibration where predict found one (EMD R_pixel_size), else the "
                   "maps are in scan positions")
@opt("strain", "weights", "--weights", type=click.Choice(["auto", "intensity", "squared", "quartic", "none", "scan"]),
              help="Least-squares weights of the vectors: their intensity, its square, its fourth power, or equal; "
                   "scan: a first fit with quartic weights for model vectors (their V_g heights) and equal ones for "
                   "correlation peaks (baseline, py4DSTEM), then each reflection weighed by 1 / its scatter about "
                   "its lattice point over the scan's positions (a scan of one position keeps the first fit); "
                   "auto: scan, as every method chose on the strain survey's tuning series.")
@opt("strain", "min_indexed_fraction", "--min-indexed-fraction", type=float,
     help="Positions with less of the vectors' weight on the fitted lattice are not fitted (NaN, counted): several "
           "grains, rings or amorphous material are not one lattice.")
@opt("strain", "correct", "--correct", type=click.Choice(["none", "reference"]),
     help="reference: measure each reflection's displacement from its lattice point (dynamical scattering moves "
           "disk centres, differently for each reflection) over the reference positions and take it off that "
           "reflection everywhere, fitting only those reflections; assumes the reference region has the scan's "
           "thickness and orientation. none: fit the vectors as found.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
def strain_cmd(vectors, config_path, out, structure, zone_axis, g1, g2, overwrite, **_options) -> None:
    """Strain and in-plane rotation maps from the Bragg VECTORS of a scan.

    VECTORS: the HDF5 of fourdcrystal predict (--method auto, model or baseline) or a py4DSTEM
    BraggVectors file (EMD 1.0; its origin calibration is used). Per scan position the vectors
    are indexed on a reciprocal basis g1, g2 and the lattice fitted by weighted least squares;
    the real-space deformation relative to the reference lattice, F = G^-T G_ref^T, is split as
    F = (I + ε) R(θ): ε_xx, ε_yy, ε_xy (detector frame, tensor shear; engineering shear = 2 ε_xy)
    and θ (degrees, counter-clockwise from q_x = detector axis 0 towards q_y = axis 1), all in
    the detector frame. Writes OUT (maps exx, eyy, exy as fractions, theta_deg, residual_rms,
    n_indexed, fit_ok) and OUT with .png (maps in % and degrees).

    With --reference crystal and vectors that carry the crystal tilt (predict --tilt), OUT also
    holds the 3D orientation per position: orientation_matrix (crystal Cartesian frame → detector
    frame x = q_x, y = q_y, z = beam), beam_direction_uvw (the beam in the cell's direction
    indices, e.g. [0.002 -0.001 1] near [001]), off_axis_mrad and euler_bunge_deg (degrees).
    NaN where the lattice or the tilt fit failed.
    """
    import numpy as np

    from ..api import strain
    from ..settings import StrainSettings

    c = load("strain", config_path)
    min_vectors = c["min_vectors"]
    res = strain(vectors, out, StrainSettings(**c), structure=structure, zone_axis=zone_axis,
                 g1=parse_pair(g1, "--g1", float), g2=parse_pair(g2, "--g2", float), overwrite=overwrite)
    g = res["reference_basis"]
    click.echo(f"reference lattice g1 = ({g[0][0]:.5f}, {g[1][0]:.5f}), g2 = ({g[0][1]:.5f}, {g[1][1]:.5f}) "
               f"{res['units']}" + (f" (the crystal's, {100 * res['maps']['crystal_mismatch']:.2f} % from the "
                                    f"scan's median lattice)" if res["maps"]["crystal_mismatch"] is not None else ""))
    source = options_named(res["scan_step_source"], click.get_current_context().command)
    click.echo(f"scan step: {res['scan_step_nm']:g} nm ({source})" if res["scan_step_nm"] else
               f"scan step: unknown, maps in scan positions ({source})")
    m = res["maps"]
    ok = m["fit_ok"]
    if ok.any():
        click.echo("over the fitted positions: " + ", ".join(
            f"{k} {100 * np.nanmedian(m[k][ok]):+.3f} % (spread {100 * np.nanstd(m[k][ok]):.3f} %)"
            for k in ("exx", "eyy", "exy")) + f", θ spread {np.nanstd(m['theta_deg'][ok]):.3f}°")
    o = m["orientation"]
    if o is not None:
        uvw = " ".join(str(v) for v in res["zone_axis"])
        off = o["off_axis_mrad"][np.isfinite(o["off_axis_mrad"])]
        click.echo(f"3D orientation (zone axis [{uvw}] and tilt) at {o['fitted']} of {res['positions']} positions"
                   + (f": off the zone axis by {np.median(off):.2f} mrad (median), {off.max():.2f} mrad (largest)"
                      if off.size else "") + (f"; NaN at {o['failed']} (lattice or tilt fit failed)" if o["failed"]
                                              else ""))
    elif res["zone_axis"] is not None:
        click.echo("3D orientation: not written, the vectors carry no tilt (predict --tilt writes it)")
    if res["failed"]:
        lattice_off = res["not_one_lattice"]
        click.echo(f"{res['failed']} of {res['positions']} positions not fitted (fewer than {min_vectors} indexed "
                   f"vectors" + (f"; at {lattice_off} of them under {c['min_indexed_fraction']:g} of the vectors' "
                                 f"weight lay on one lattice" if lattice_off else "") + "); NaN in the maps")
        if res["failed"] > res["positions"] / 2:
            log.warning("most positions could not be fitted: " + (
                "their vectors do not form one lattice (several grains, rings or amorphous material?); the maps "
                "hold only the single-crystal positions" if lattice_off > res["failed"] / 2 else
                "too few vectors indexed (wrong basis: give --g1/--g2, or a lower peak threshold in predict)"))
    click.echo(f"wrote {res['out']} and {res['png']}")
