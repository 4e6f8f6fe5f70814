"""The `fourdcrystal` command line: a thin layer that parses options and calls library stages.

Every user-facing problem is raised as :class:`FourdError` and printed here as one line,
``error: ...``, with exit code 2.
"""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
from .errors import FourdError
from .progress import set_quiet

log = logging.getLogger("fourdcrystal")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FourdError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted; finished outputs are kept, rerun the same command to resume", err=True)
            ctx.exit(130)


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    set_quiet(quiet)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="fourdcrystal")
@click.option("-v", "--verbose", count=True, help="More log output (debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Crystal structures -> simulated CBED training data -> FCU-Net -> Bragg vectors.

    Stages, each reading the previous one's files:
    select (crystal catalogue) -> supercell -> simulate -> train -> evaluate / predict.
    Every stage takes --config FILE (YAML, one section per stage); command-line options
    override the file. Units are in option names and help: Å, Å⁻¹, mrad, eV.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    _setup_logging(verbose, quiet)


_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                              help="YAML config file (its 'select:' section is used).")


@cli.command("select")
@_config_option
@click.option("--source", "sources", multiple=True, type=click.Choice(["aflow", "mp", "files"]),
              help="Crystal source, repeatable: aflow (embedded AFLOW prototype library, offline), "
                   "mp (Materials Project, needs MP_API_KEY), files (CIF/POSCAR folders). [default: aflow]")
@click.option("--out", type=click.Path(file_okay=False), help="Output catalogue folder. [default: catalogue]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--dry-run", is_flag=True, help="Print the summary table only; write nothing.")
@click.option("--per-prototype", help="Crystals drawn per prototype group of N: sqrt (round(√N)), all, or an integer K.")
@click.option("--max-crystals", type=int, help="Cap on the number of crystals (trims depth before prototypes).")
@click.option("--seed", type=int, help="Random seed of the draw. [default: 0]")
@click.option("--symprec", type=float, help="Symmetry tolerance for prototype labels, in Å. [default: 0.1]")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable/unlabellable structures with a warning.")
@click.option("--files", "file_paths", multiple=True, type=click.Path(),
              help="Folder (or file) of CIF/POSCAR structures for the files source; repeatable.")
@click.option("--api-key", help="Materials Project API key (32 characters). [default: $MP_API_KEY]")
@click.option("--endpoint", help="Materials Project REST endpoint. [default: $MP_API_ENDPOINT or the public API]")
@click.option("--elements", help="mp: only materials containing all of these, comma-separated (e.g. Si,O).")
@click.option("--exclude-elements", help="mp: drop materials containing any of these, comma-separated.")
@click.option("--num-sites", help="mp: sites in the MP cell as MIN,MAX (either may be empty). [default: 1,64]")
@click.option("--e-above-hull-max", type=float, help="mp: energy above hull maximum in eV/atom. [default: 0.05]")
@click.option("--stable-only", is_flag=True, default=None, help="mp: only materials on the convex hull.")
@click.option("--experimental-only", is_flag=True, default=None, help="mp: only materials with an ICSD entry.")
@click.option("--include-gnome", is_flag=True, default=None, help="mp: include GNoME-predicted materials.")
@click.option("--max-results", type=int, help="mp: stop after this many documents.")
@click.pass_context
def select_cmd(ctx: click.Context, config_path, sources, out, overwrite, dry_run, per_prototype, max_crystals, seed,
               symprec, skip_bad, file_paths, api_key, endpoint, elements, exclude_elements, num_sites,
               e_above_hull_max, stable_only, experimental_only, include_gnome, max_results) -> None:
    """Build a crystal catalogue grouped by AFLOW prototype, √N-sampled per group.

    Writes OUT/catalogue.json (structures as CIF text, prototype labels, space groups,
    lattice parameters in Å and degrees, provenance) and prints a summary table.
    """
    from .catalog import build_catalogue, drawn_by_source, summary_table, write_catalogue
    from .config import load_config

    cfg = load_config("select", config_path, {
        "sources": list(sources) or None, "out": out, "per_prototype": per_prototype,
        "max_crystals": max_crystals, "seed": seed, "symprec": symprec, "skip_bad": skip_bad,
        "files.paths": list(file_paths) or None, "mp.endpoint": endpoint, "mp.elements": elements,
        "mp.exclude_elements": exclude_elements, "mp.num_sites": num_sites,
        "mp.energy_above_hull_max": e_above_hull_max, "mp.stable_only": stable_only,
        "mp.experimental_only": experimental_only, "mp.include_gnome": include_gnome,
        "mp.max_results": max_results,
    })
    if file_paths and "files" not in cfg["sources"]:
        cfg["sources"].append("files")
    catalogue = build_catalogue(cfg, api_key=api_key, quiet=ctx.obj["quiet"])
    click.echo(summary_table(catalogue.groups, drawn_by_source(catalogue)))
    if dry_run:
        click.echo("dry run: nothing written")
        return
    path = write_catalogue(catalogue, cfg["out"], overwrite=overwrite)
    click.echo(f"wrote {len(catalogue.crystals)} crystals to {path}")


@cli.command("supercell")
@click.argument("catalogue", required=False, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file (its 'supercell:' section is used).")
@click.option("--out", type=click.Path(file_okay=False), help="Specimens folder. [default: specimens]")
@click.option("--overwrite", is_flag=True, help="Replace an existing specimens folder.")
@click.option("--zone-axes", type=int, help="Zone axes per crystal. [default: 3]")
@click.option("--max-index", type=int, help="Largest |u|,|v|,|w| of a zone axis [uvw]. [default: 2]")
@click.option("--axis-choice", type=click.Choice(["shortest", "random"]), help="Lowest-index axes first, or random.")
@click.option("--all-axes", is_flag=True, default=None, help="Keep symmetry-equivalent zone axes too.")
@click.option("--phi", "phi_range", help="In-plane rotation range in degrees, MIN,MAX. [default: 0,360]")
@click.option("--tilt-max", type=float, help="Largest out-of-plane tilt in mrad (≤ 50). [default: 10]")
@click.option("--tilt-mode", type=click.Choice(["beam", "atoms"]),
              help="beam: the probe is tilted, the slab stays periodic; atoms: the crystal is rotated. [default: beam]")
@click.option("--lateral-size", help="Lateral box size in Å, one value or MIN,MAX. [default: 40]")
@click.option("--thickness", help="Thickness series in Å, comma-separated. [default: 50,100,200,300,500]")
@click.option("--strain-tol", type=float, help="Largest strain to make a cell orthogonal. [default: 0.005]")
@click.option("--seed", type=int, help="Random seed. [default: 0]")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip crystals/axes that cannot be built.")
@click.option("--preview", "preview_id", help="Write a PNG of this specimen's projected structure (OUT/preview-ID.png).")
@click.pass_context
def supercell_cmd(ctx, catalogue, config_path, out, overwrite, zone_axes, max_index, axis_choice, all_axes, phi_range,
                  tilt_max, tilt_mode, lateral_size, thickness, strain_tol, seed, skip_bad, preview_id) -> None:
    """Plan oriented specimens from a CATALOGUE folder into a specimen manifest.

    Each specimen: a crystal, a zone axis [uvw] along the beam, an in-plane rotation φ (deg),
    a small tilt (θx, θy) in mrad, a lateral box (Å) and a thickness series (Å). Writes
    OUT/specimens.csv, OUT/crystals.json and OUT/manifest.json. With --preview ID (and no
    CATALOGUE, or an existing OUT) it draws that specimen seen down the beam.
    """
    from pathlib import Path

    from .config import load_config
    from .plots import specimen_preview
    from .specimen import axis_text
    from .supercell import load_specimen, plan_specimens, read_specimens, summary, write_specimens

    cfg = load_config("supercell", config_path, {
        "out": out, "zone_axes_per_crystal": zone_axes, "max_index": max_index, "axis_choice": axis_choice,
        "drop_equivalent": (False if all_axes else None), "phi_deg": phi_range, "tilt_mrad_max": tilt_max,
        "tilt_mode": tilt_mode, "lateral_size_A": lateral_size, "thicknesses_A": thickness,
        "strain_tol": strain_tol, "seed": seed, "skip_bad": skip_bad,
    })
    out_dir = Path(cfg["out"])
    if catalogue is not None and not (preview_id and out_dir.exists() and not overwrite):
        rows, crystals, header = plan_specimens(catalogue, cfg)
        write_specimens(out_dir, rows, crystals, header, overwrite=overwrite)
        click.echo(summary(rows, header))
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


def main() -> None:
    cli(prog_name="fourdcrystal")


if __name__ == "__main__":
    main()
