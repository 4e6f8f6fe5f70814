"""`fourdcrystal export`."""

from __future__ import annotations

import click

from .group import cli


@cli.command("export")
@click.argument("vectors", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="py4DSTEM file to write (.h5).")
@click.option("--method", type=click.Choice(["auto", "model", "baseline"]), default="auto", show_default=True,
              help="Which vectors of the predict result: auto, the ones predict chose; model; or baseline.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
def export_cmd(vectors, out, method, overwrite) -> None:
    """Write the Bragg VECTORS of a predict result as a py4DSTEM BraggVectors file (EMD 1.0).

    py4DSTEM.read(OUT) gives a BraggVectors object: raw vectors in detector pixels, origin
    (the zero beam predict found) and Q pixel size (Å⁻¹) in its calibration, so
    braggvectors.cal[x, y] are in Å⁻¹, ready for py4DSTEM's strain and orientation tools. A result of
    predict --tilt carries the crystal tilt per position into the vectors' metadata:
    braggvectors.metadata["fourdcrystal"]["tilt_x_mrad"] (and tilt_y_mrad, tilt_sigma_x_mrad,
    tilt_sigma_y_mrad, tilt_convention), in mrad.
    """
    from ..api import export

    vs = export(vectors, out, method=method, overwrite=overwrite)
    click.echo(f"wrote {out} ({int(vs.offsets[-1])} {vs.method} vectors, {vs.scan_shape[0]}×{vs.scan_shape[1]} scan); "
               f"py4DSTEM.read() loads it as BraggVectors")
