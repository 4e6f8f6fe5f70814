"""`fourdcrystal strain-benchmark`."""

from __future__ import annotations

import click

from ..errors import FourdError
from .group import cli


@cli.command("strain-benchmark")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--model", default=None, help="model.pt with its card, or a shipped name. [default: release]")
@click.option("--crystals", default="Si,SrTiO3,GaN,TiO2", show_default=True,
              help="Comma-separated built-in crystals (cubic Si and SrTiO3, hexagonal GaN, tetragonal TiO2).")
@click.option("--zone-axes", "zone_axes_per_crystal", type=int, default=2, show_default=True, help="Zone axes per crystal (1 or 2).")
@click.option("--scan", type=int, nargs=2, default=(3, 3), show_default=True,
              help="Positions per series, ROWS COLS; position (0, 0) is the unstrained reference.")
@click.option("--thicknesses", "thicknesses_A", default="100,300,600,1000", show_default=True, help="Thicknesses, Å.")
@click.option("--doses", default="clean,1e5,1e4,1e3", show_default=True,
              help="clean and / or electrons per pattern (Poisson counts).")
@click.option("--strain-pct", type=float, default=1.0, show_default=True, help="Strain per component up to ± this, %.")
@click.option("--rotation-deg", type=float, default=2.0, show_default=True, help="In-plane rotations up to ± this, °.")
@click.option("--energy", "energy_eV", type=float, default=200e3, show_default=True, help="Beam energy, eV.")
@click.option("--semiangle", "semiangle_mrad", type=float, default=2.0, show_default=True, help="Convergence semi-angle, mrad.")
@click.option("--box", "box_A", type=float, default=60.0, show_default=True,
              help="Simulated cut box side, Å; the detector pixel is DETECTOR_BIN/box Å⁻¹.")
@click.option("--px", "output_px", type=int, default=256, show_default=True, help="Detector pixels per side.")
@click.option("--detector-bin", type=int, default=1, show_default=True,
              help="Simulated pixels summed into one detector pixel, per side: a larger --box read through the same "
                   "detector (e.g. --box 240 --detector-bin 4: 1/60 Å⁻¹ pixels; multislice time grows as the box²).")
@click.option("--seed", type=int, default=0, show_default=True, help="Test series seed; the tuning series use SEED+1.")
@click.option("--threads", type=int, default=1, show_default=True, help="FFT threads of the simulation.")
@click.option("--py4dstem-python", type=click.Path(dir_okay=False),
              help="The python of a py4DSTEM 0.14 environment (scripts/compare_py4dstem.py makes one): adds "
                   "py4DSTEM's find_Bragg_disks, with the settings in benchmarks/compare_py4dstem.json.")
@click.option("--py4dstem-settings", type=click.Path(dir_okay=False),
              help="The compare_py4dstem.py result whose tuned py4DSTEM settings are used. "
                   "[default: benchmarks/compare_py4dstem.json of the source tree]")
def strain_benchmark_cmd(out, model, crystals, zone_axes_per_crystal, scan, thicknesses_A, doses, strain_pct,
                         rotation_deg, energy_eV, semiangle_mrad, box_A, output_px, detector_bin, seed, threads, py4dstem_python, py4dstem_settings) -> None:
    """Strain and rotation errors of the model, the tuned baseline (and py4DSTEM) against the applied truth.

    Simulates strained scans of several crystals on two zone axes each (multislice; a tuning series
    and a test series per crystal and zone axis, kept in OUT/series and reused), runs predict
    --baseline on every file, chooses each method's strain-fit settings on the tuning series and
    scores the test series: rms strain error (%) and rotation error (°) by dose and thickness.
    Writes OUT/report.json and OUT/report.png. The default survey (4 crystals, 8 series of 3×3
    positions, 4 thicknesses, 4 doses) took about 20 min on 2 CPU cores (half simulation, half
    predict and fits); a rerun with another model only predicts again.
    """
    from pathlib import Path

    from ..config import split_items
    from .common import parse_floats
    from ..evaluation.strain_benchmark import StrainBenchmarkConfig, format_table, run_benchmark, tuned_py4dstem_settings

    def items(text, name):
        try:
            return tuple(split_items(text))
        except ValueError as exc:
            raise FourdError(f"{name}: {exc}") from None

    config = StrainBenchmarkConfig(
        crystals=items(crystals, "`crystals`"), zone_axes_per_crystal=zone_axes_per_crystal,
        scan=tuple(scan), strain_pct=strain_pct, rotation_deg=rotation_deg,
        thicknesses_A=tuple(parse_floats(thicknesses_A, "`thicknesses_A`")), energy_eV=energy_eV, semiangle_mrad=semiangle_mrad,
        box_A=box_A, output_px=output_px, detector_bin=detector_bin, doses=items(doses, "`doses`"), seed=seed,
        threads=threads).check()
    p4d = None
    if py4dstem_settings and not py4dstem_python:
        # the settings only steer py4DSTEM's runs: without them the survey would run as if they were not given
        raise FourdError("`py4dstem_settings` goes with `py4dstem_python` (the environment that runs py4DSTEM)")
    if py4dstem_python:
        if not Path(py4dstem_python).is_file():
            raise FourdError(f"`py4dstem_python` {py4dstem_python}: no such file")
        p4d = tuned_py4dstem_settings(py4dstem_settings, model, config.k_pixel_invA)
    report = run_benchmark(out, model, config, py4dstem_python, p4d)
    click.echo(format_table(report))
    click.echo(f"wrote {Path(out) / 'report.json'}, {Path(out) / 'report.png'}")
