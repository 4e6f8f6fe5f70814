"""`fourdcrystal simulate`."""

from __future__ import annotations

import click

from ..atomic import rank_zero_lock
from ..errors import FourdError
from .common import config_option, load_explicit, opt, parse_floats
from .group import cli


@cli.command("simulate")
@click.argument("specimens", required=False, type=click.Path())
@config_option("simulate")
@opt("simulate", "out", "--out", type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset made with another config.")
@opt("simulate", "energy_eV", "--energy", "energy_eV",
              help="Beam energy in eV, e.g. 200e3; a comma list (200e3,300e3) draws one per specimen.")
@opt("simulate", "semiangle_mrad", "--semiangle", "semiangle_mrad",
              help="Convergence semi-angle in mrad; a comma list (1,2,4) draws one per specimen.")
@opt("simulate", "defocus_A", "--defocus", "defocus_A", type=float, help="Defocus in Å, positive = underfocus.")
@opt("simulate", "cs_A", "--cs", "cs_A", type=float, help="Spherical aberration Cs in Å (1 mm = 1e7 Å).")
@opt("simulate", "output_px", "--output-px", type=int, help="Pattern size H = W in pixels.")
@opt("simulate", "slice_thickness_A", "--slice-thickness", "slice_thickness_A", type=float, help="Target slice thickness in Å.")
@opt("simulate", "parametrization", "--parametrization", type=click.Choice(["lobato", "kirkland"]), help="Atomic potentials.")
@opt("simulate", "positions_per_specimen", "--positions", "positions_per_specimen", type=int, help="Probe positions per specimen.")
@click.option("--probe-position", type=click.Choice(["center", "random"]), help="Probe at the box centre or random.")
@opt("simulate", "frozen_phonons", "--frozen-phonons", type=int, help="Frozen-phonon configurations per pattern, 0 = off.")
@opt("simulate", "phonon_fraction", "--phonon-fraction", type=float,
     help="Fraction of specimens (seeded draw) with frozen phonons, the rest static.")
@opt("simulate", "specimens_per_shard", "--specimens-per-shard", type=int, help="Specimens per HDF5 shard.")
@click.option("--limit", type=int, help="Simulate only the first N specimens.")
@opt("simulate", "workers", "--workers", type=int, help="Local worker processes, one FFT thread each.")
@click.option("--scheduler", help="dask.distributed scheduler address (tcp://host:8786); workers share the disk.")
@opt("simulate", "seed", "--seed", type=int, help="Random seed.")
@click.option("--structure", type=click.Path(), help="Single-structure mode: a CIF/POSCAR file instead of SPECIMENS.")
@click.option("--zone-axis", type=int, nargs=3, help="Single-structure mode: zone axis u v w. [default: 0 0 1]")
@click.option("--thickness", "thicknesses_A", help="Single-structure mode: thicknesses in Å, comma-separated. [default: 100]")
@click.option("--lateral-size", "lateral_size_A", type=float, help="Single-structure mode: lateral box in Å. [default: 40]")
@click.option("--phi", "phi_deg", type=float, help="Single-structure mode: in-plane rotation in degrees. [default: 0]")
@click.option("--tilt", "tilt_mrad", type=float, nargs=2, help="Single-structure mode: beam tilt θx θy in mrad. [default: 0 0]")
@click.option("--strain", "strain_pct", type=float, nargs=3,
              help="Single-structure mode: in-plane strain EXX EYY EXY in % (specimen frame). [default: 0 0 0]")
@click.pass_context
def simulate_cmd(ctx, specimens, config_path, out, overwrite, energy_eV, semiangle_mrad, defocus_A, cs_A, output_px,
                 slice_thickness_A, parametrization, positions_per_specimen, probe_position, frozen_phonons,
                 phonon_fraction, specimens_per_shard, limit, workers, scheduler, seed, structure, zone_axis, thicknesses_A, lateral_size_A,
                 phi_deg, tilt_mrad, strain_pct) -> None:
    """Multislice CBED with V_g / q_z labels from a SPECIMENS folder into HDF5 shards.

    Writes OUT/shard-NNNNNN.h5 (cbed, probe, vg, qz: float32 n×H×W, q = 0 at (H//2, W//2),
    pixel size in Å⁻¹ recorded) and OUT/index.json (config, seed, software, splits by crystal).
    A killed run restarted with the same command resumes. With --structure FILE (and no
    SPECIMENS) one crystal is simulated and OUT/patterns.png drawn.
    """
    from pathlib import Path

    from ..simulation.runner import simulate_dataset

    cfg = load_explicit("simulate", config_path, {
        "out": out, "energy_eV": energy_eV, "semiangle_mrad": semiangle_mrad, "defocus_A": defocus_A, "cs_A": cs_A,
        "output_px": output_px, "slice_thickness_A": slice_thickness_A, "parametrization": parametrization,
        "positions_per_specimen": positions_per_specimen, "probe_position": probe_position,
        "frozen_phonons": frozen_phonons, "phonon_fraction": phonon_fraction, "specimens_per_shard": specimens_per_shard, "limit": limit,
        "workers": workers, "seed": seed,
    })
    out_dir = Path(cfg["out"])
    with rank_zero_lock(out_dir):
        if structure is not None:
            if specimens is not None:
                raise FourdError("give either a SPECIMENS folder or --structure FILE, not both")
            from ..specimens.supercell import single_structure_specimens, write_specimens

            rows, crystals, header = single_structure_specimens(
                structure, zone_axis or (0, 0, 1), parse_floats(thicknesses_A, "--thickness") or [100.0], phi_deg or 0.0,
                tilt_mrad or (0.0, 0.0), lateral_size_A or 40.0, seed=cfg["seed"],
                strain=tuple(v / 100.0 for v in (strain_pct or (0.0, 0.0, 0.0))))
            from ..simulation.runner import SINGLE_SPECIMEN

            specimens = out_dir / SINGLE_SPECIMEN
            if out_dir.exists() and not (out_dir / "run.json").exists() and any(out_dir.iterdir()) and not overwrite:
                raise FourdError(f"output folder {out_dir} exists and is not a fourdcrystal dataset; choose another --out "
                                 f"or pass --overwrite")
            write_specimens(specimens, rows, crystals, header, overwrite=True)
        elif specimens is None:
            raise FourdError("give a SPECIMENS folder (from fourdcrystal supercell) or --structure FILE")
        elif any(v is not None for v in (zone_axis, thicknesses_A, lateral_size_A, phi_deg, tilt_mrad, strain_pct)):
            raise FourdError("--zone-axis/--thickness/--lateral-size/--phi/--tilt/--strain belong to --structure mode; "
                             "with a SPECIMENS folder they come from the manifest")
        index = simulate_dataset(specimens, cfg, workers=cfg["workers"], scheduler=scheduler, overwrite=overwrite)
    run = index["run"]
    rate = f", {run['patterns'] / run['seconds']:.2f} patterns/s" if run["patterns"] else " (all shards were done)"
    c = index["split_counts"]
    click.echo(f"{index['samples']} samples in {len(index['shards'])} shards (train {c['train']}, val {c['val']}, "
               f"test {c['test']}){rate}; wrote {out_dir / 'index.json'}")
    if structure is not None:
        from ..simulation.inspect import dataset_montage

        path = dataset_montage(out_dir, out_dir / "patterns.png", count=index["samples"])
        click.echo(f"wrote {path}")
