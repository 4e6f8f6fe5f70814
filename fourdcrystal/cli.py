"""The `fourdcrystal` command line: a thin layer that parses options and calls library stages.

Every user-facing problem is raised as :class:`FourdError` and printed here as one line,
``error: ...``, with exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from . import __version__
from .atomic import rank_zero_lock
from .errors import FourdError
from .progress import set_quiet

log = logging.getLogger("fourdcrystal")


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's standalone mode, but a usage error is one line too: ``error: …`` naming the command."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "fourdcrystal")
            click.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FourdError as exc:
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            ctx.exit(2)
        except OSError as exc:
            import errno

            # the stages check their outputs before work; this catches a disk that fills or turns read-only
            # midway, in one line like every other error
            if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG):
                raise
            click.echo(f"error: cannot write {exc.filename or 'the output'}: {exc.strerror}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted; finished outputs are kept, rerun the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # the last net: a defect of ours, not bad input (exit 1, not 2)
            stage = ctx.invoked_subcommand or "fourdcrystal"
            saved = _save_traceback(stage)
            first = (_one_line(str(exc)).strip().splitlines() or ["(no message)"])[0]
            click.echo(f"error: internal error in {stage}: {type(exc).__name__}: {first}"
                       + (f" (traceback saved to {saved})" if saved else ""), err=True)
            ctx.exit(1)


def _save_traceback(stage: str) -> str | None:
    """The current exception's traceback in a new file under the temporary folder (None if that fails too)."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix=f"fourdcrystal-{stage}-", suffix=".traceback.txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"fourdcrystal {__version__}: {' '.join(sys.argv)}\n")
            traceback.print_exc(file=f)
        return path
    except OSError:
        return None


def _one_line(message: str) -> str:
    """A FourdError raised in a DataLoader worker comes back wrapped by torch ("Caught FourdError in
    DataLoader worker process 0. Original Traceback ..."): keep the original message."""
    if "Original Traceback" in message:
        for line in reversed(message.splitlines()):
            if "FourdError: " in line:
                return line.split("FourdError: ", 1)[1]
    return message


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
    select (crystal catalogue) -> supercell -> simulate -> train -> tune / evaluate -> predict ->
    strain (or export to py4DSTEM).
    Every stage takes --config FILE (YAML, one section per stage) or a shipped config's name
    (quickstart, default, release); command-line options override it. Units, the same in
    options, configs, tables and plots: lengths in Å (thickness too), reciprocal lengths in Å⁻¹,
    beam angles in mrad, in-plane rotations in degrees, energies in eV.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    _setup_logging(verbose, quiet)


def _shipped_text(*sections: str) -> str:
    """'a, b or c: the configs shipped in the package that configure this stage' (or the one such config)."""
    from .config import shipped_configs

    names = shipped_configs(*sections)
    if len(names) == 1:
        return f"{names[0]}: the config shipped in the package"
    return ", ".join(names[:-1]) + " or " + names[-1] + ": the configs shipped in the package that configure it"


def _config_option(section: str):
    # a plain string, not click.Path(dir_okay=False): `--config release` names the shipped config even where a
    # folder release/ (that config's output) exists; a folder given as a path fails in load_config
    return click.option("--config", "config_path", type=str,
                        help=f"YAML config file (its '{section}:' section is used), or {_shipped_text(section)}.")


class _ConfigOption(click.Option):
    """An option that overrides one config key. Its ``[default: …]`` is read from the config schema, the one
    place a default is written; the option's own default is None ("not given: the config decides")."""

    def __init__(self, decls, *, section: str, key: str, default_text: str | None = None, **kw):
        from .config import schema_field, show

        self.section, self.config_key = section, key
        shown = default_text if default_text is not None else show(schema_field(section, key).default)
        kw["help"] = f"{kw.get('help', '')} [default: {shown}]".strip()
        kw.setdefault("default", None)
        super().__init__(decls, **kw)


def _opt(section: str, key: str, *decls, **kw):
    """``click.option`` for config key ``key`` of ``section`` (see :class:`_ConfigOption`)."""
    return click.option(*decls, cls=_ConfigOption, section=section, key=key, **kw)


def _load(section: str, config_path) -> dict:
    """The stage's config: schema defaults <- ``--config`` file <- the options given on this command line. A bad
    value is reported under the option's name."""
    from .config import load_config

    ctx = click.get_current_context()
    opts = [p for p in ctx.command.params if isinstance(p, _ConfigOption)]
    return load_config(section, config_path, {p.config_key: ctx.params[p.name] for p in opts},
                       names={p.config_key: p.opts[0] for p in opts})


def _load_explicit(section: str, config_path, overrides: dict) -> dict:
    """``load_config`` for a command that builds its overrides itself (values parsed or renamed on the way):
    a bad value is still reported under the option's name. Each key is matched to the option of the same name
    (its last part: ``mp.timeout_s`` → ``timeout_s``), else to the one option whose value it is."""
    from .config import load_config

    ctx = click.get_current_context()
    params = [p for p in ctx.command.params if isinstance(p, click.Option)]
    names = {}
    for key, value in overrides.items():
        if value is None:
            continue
        last = key.rsplit(".", 1)[-1]
        same = [p for p in params if p.name == last or p.name == last.rsplit("_", 1)[0]]
        if not same:
            same = [p for p in params if ctx.params.get(p.name) is value]
        if len(same) == 1:
            names[key] = same[0].opts[0]
    return load_config(section, config_path, overrides, names=names)


@cli.command("select")
@_config_option("select")
@_opt("select", "sources", "--source", "sources", multiple=True,
      type=click.Choice(["aflow", "decorated", "mp", "files"]),
      help="Crystal source, repeatable: aflow (embedded AFLOW prototype library, offline), decorated (those "
           "prototypes with chemically similar elements, offline), mp (Materials Project, needs MP_API_KEY), files "
           "(CIF/POSCAR folders).")
@_opt("select", "out", "--out", type=click.Path(file_okay=False), help="Output catalogue folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--dry-run", is_flag=True, help="Print the summary table only; write nothing.")
@click.option("--per-prototype", help="Crystals drawn per prototype group of N: sqrt (round(√N)), all, or an integer K.")
@click.option("--max-crystals", type=int, help="Cap on the number of crystals (trims depth before prototypes).")
@_opt("select", "seed", "--seed", type=int, help="Random seed of the draw.")
@_opt("select", "symprec", "--symprec", type=float, help="Symmetry tolerance for prototype labels, in Å.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable/unlabellable structures with a warning.")
@click.option("--files", "file_paths", multiple=True, type=click.Path(),
              help="Folder (or file) of CIF/POSCAR structures for the files source; repeatable.")
@click.option("--api-key", help="Materials Project API key (32 characters). [default: $MP_API_KEY]")
@click.option("--endpoint", help="Materials Project REST endpoint. [default: $MP_API_ENDPOINT or the public API]")
@click.option("--elements", help="mp: only materials containing all of these, comma-separated (e.g. Si,O).")
@click.option("--exclude-elements", help="mp: drop materials containing any of these, comma-separated.")
@_opt("select", "mp.num_sites", "--num-sites", help="mp: sites in the MP cell as MIN,MAX (either may be empty).")
@_opt("select", "mp.energy_above_hull_max", "--e-above-hull-max", type=float, help="mp: energy above hull maximum in eV/atom.")
@click.option("--stable-only", is_flag=True, default=None, help="mp: only materials on the convex hull.")
@click.option("--experimental-only", is_flag=True, default=None, help="mp: only materials with an ICSD entry.")
@click.option("--include-gnome", is_flag=True, default=None, help="mp: include GNoME-predicted materials.")
@click.option("--max-results", type=int, help="mp: stop after this many documents.")
@_opt("select", "mp.timeout_s", "--timeout", type=float,
      help="mp: seconds to wait for the endpoint to connect and to answer each request (3 tries, then an error).")
@click.pass_context
def select_cmd(ctx: click.Context, config_path, sources, out, overwrite, dry_run, per_prototype, max_crystals, seed,
               symprec, skip_bad, file_paths, api_key, endpoint, elements, exclude_elements, num_sites,
               e_above_hull_max, stable_only, experimental_only, include_gnome, max_results, timeout) -> None:
    """Build a crystal catalogue grouped by AFLOW prototype, √N-sampled per group.

    Writes OUT/catalogue.json (structures as CIF text, prototype labels, space groups,
    lattice parameters in Å and degrees, provenance) and prints a summary table.
    """
    from .api import select
    from .catalog import drawn_by_source, summary_table
    from .catalog.catalogue import FILENAME
    from .settings import SelectSettings

    cfg = _load_explicit("select", config_path, {
        "sources": list(sources) or None, "out": out, "per_prototype": per_prototype,
        "max_crystals": max_crystals, "seed": seed, "symprec": symprec, "skip_bad": skip_bad,
        "files.paths": list(file_paths) or None, "mp.endpoint": endpoint, "mp.elements": elements,
        "mp.exclude_elements": exclude_elements, "mp.num_sites": num_sites,
        "mp.energy_above_hull_max": e_above_hull_max, "mp.stable_only": stable_only,
        "mp.experimental_only": experimental_only, "mp.include_gnome": include_gnome,
        "mp.max_results": max_results, "mp.timeout_s": timeout,
    })
    if file_paths and "files" not in cfg["sources"]:
        cfg["sources"].append("files")
    from pathlib import Path

    catalogue = select(SelectSettings(**cfg), api_key=api_key, overwrite=overwrite, dry_run=dry_run,
                       quiet=ctx.obj["quiet"])
    click.echo(summary_table(catalogue.groups, drawn_by_source(catalogue)))
    if dry_run:
        click.echo("dry run: nothing written")
        return
    click.echo(f"wrote {len(catalogue.crystals)} crystals to {Path(cfg['out']) / FILENAME}")


@cli.command("supercell")
@click.argument("catalogue", required=False, type=click.Path())
@_config_option("supercell")
@_opt("supercell", "out", "--out", type=click.Path(file_okay=False), help="Specimens folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing specimens folder.")
@_opt("supercell", "zone_axes_per_crystal", "--zone-axes", type=int, help="Zone axes per crystal.")
@_opt("supercell", "max_index", "--max-index", type=int, help="Largest |u|,|v|,|w| of a zone axis [uvw].")
@click.option("--axis-choice", type=click.Choice(["shortest", "random"]), help="Lowest-index axes first, or random.")
@click.option("--all-axes", is_flag=True, default=None, help="Keep symmetry-equivalent zone axes too.")
@_opt("supercell", "phi_deg", "--phi", "phi_range", help="In-plane rotation range in degrees, MIN,MAX.")
@_opt("supercell", "tilt_mrad_max", "--tilt-max", type=float, help="Largest out-of-plane tilt in mrad (≤ 50).")
@_opt("supercell", "tilt_mode", "--tilt-mode", type=click.Choice(["beam", "atoms"]),
              help="beam: the probe is tilted, the slab stays periodic; atoms: the crystal is rotated.")
@_opt("supercell", "lateral_size_A", "--lateral-size", help="Lateral box size in Å, one value or MIN,MAX.")
@_opt("supercell", "thicknesses_A", "--thickness", help="Thickness series in Å, comma-separated.")
@_opt("supercell", "strain_tol", "--strain-tol", type=float, help="Largest strain to make a cell orthogonal.")
@_opt("supercell", "strain_pct", "--strain-pct",
              help="Applied in-plane strain in %: S draws each of exx, eyy, exy from [-S, S] per specimen; "
                   "EXX,EYY,EXY is fixed. Shear makes a cut box.")
@_opt("supercell", "seed", "--seed", type=int, help="Random seed.")
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

    from .plots import specimen_preview
    from .specimens.specimen import axis_text
    from .api import supercell
    from .settings import SupercellSettings
    from .specimens.supercell import load_specimen, read_specimens, summary

    cfg = _load_explicit("supercell", config_path, {
        "out": out, "zone_axes_per_crystal": zone_axes, "max_index": max_index, "axis_choice": axis_choice,
        "drop_equivalent": (False if all_axes else None), "phi_deg": phi_range, "tilt_mrad_max": tilt_max,
        "tilt_mode": tilt_mode, "lateral_size_A": lateral_size, "thicknesses_A": thickness,
        "strain_tol": strain_tol, "seed": seed, "skip_bad": skip_bad, "strain_pct": _strain_pct(strain_pct),
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


def _strain_pct(text: str | None) -> float | list[float] | None:
    """--strain-pct: one number (a range bound) or three (a fixed tensor), in %."""
    values = _floats(text, "--strain-pct")
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise FourdError(f"--strain-pct {text!r}: expected one number S or three EXX,EYY,EXY (in %)")
    return values[0] if len(values) == 1 else values


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise FourdError(f"{what} {text!r}: expected comma-separated numbers, e.g. 100,200") from None


@cli.command("simulate")
@click.argument("specimens", required=False, type=click.Path())
@_config_option("simulate")
@_opt("simulate", "out", "--out", type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset made with another config.")
@_opt("simulate", "energy_eV", "--energy", "energy_eV",
              help="Beam energy in eV, e.g. 200e3; a comma list (200e3,300e3) draws one per specimen.")
@_opt("simulate", "semiangle_mrad", "--semiangle", "semiangle_mrad",
              help="Convergence semi-angle in mrad; a comma list (1,2,4) draws one per specimen.")
@_opt("simulate", "defocus_A", "--defocus", "defocus_A", type=float, help="Defocus in Å, positive = underfocus.")
@_opt("simulate", "cs_A", "--cs", "cs_A", type=float, help="Spherical aberration Cs in Å (1 mm = 1e7 Å).")
@_opt("simulate", "output_px", "--output-px", type=int, help="Pattern size H = W in pixels.")
@_opt("simulate", "slice_thickness_A", "--slice-thickness", "slice_thickness_A", type=float, help="Target slice thickness in Å.")
@_opt("simulate", "parametrization", "--parametrization", type=click.Choice(["lobato", "kirkland"]), help="Atomic potentials.")
@_opt("simulate", "positions_per_specimen", "--positions", "positions_per_specimen", type=int, help="Probe positions per specimen.")
@click.option("--probe-position", type=click.Choice(["center", "random"]), help="Probe at the box centre or random.")
@_opt("simulate", "frozen_phonons", "--frozen-phonons", type=int, help="Frozen-phonon configurations per pattern, 0 = off.")
@_opt("simulate", "phonon_fraction", "--phonon-fraction", type=float,
      help="Fraction of specimens (seeded draw) with frozen phonons, the rest static.")
@_opt("simulate", "specimens_per_shard", "--specimens-per-shard", type=int, help="Specimens per HDF5 shard.")
@click.option("--limit", type=int, help="Simulate only the first N specimens.")
@_opt("simulate", "workers", "--workers", type=int, help="Local worker processes, one FFT thread each.")
@click.option("--scheduler", help="dask.distributed scheduler address (tcp://host:8786); workers share the disk.")
@_opt("simulate", "seed", "--seed", type=int, help="Random seed.")
@click.option("--structure", type=click.Path(), help="Single-structure mode: a CIF/POSCAR file instead of SPECIMENS.")
@click.option("--zone-axis", type=int, nargs=3, help="Single-structure mode: zone axis u v w. [default: 0 0 1]")
@click.option("--thickness", help="Single-structure mode: thicknesses in Å, comma-separated. [default: 100]")
@click.option("--lateral-size", type=float, help="Single-structure mode: lateral box in Å. [default: 40]")
@click.option("--phi", type=float, help="Single-structure mode: in-plane rotation in degrees. [default: 0]")
@click.option("--tilt", type=float, nargs=2, help="Single-structure mode: beam tilt θx θy in mrad. [default: 0 0]")
@click.option("--strain", "strain_pct", type=float, nargs=3,
              help="Single-structure mode: in-plane strain EXX EYY EXY in % (specimen frame). [default: 0 0 0]")
@click.pass_context
def simulate_cmd(ctx, specimens, config_path, out, overwrite, energy_eV, semiangle_mrad, defocus_A, cs_A, output_px,
                 slice_thickness_A, parametrization, positions_per_specimen, probe_position, frozen_phonons,
                 phonon_fraction, specimens_per_shard, limit, workers, scheduler, seed, structure, zone_axis, thickness, lateral_size,
                 phi, tilt, strain_pct) -> None:
    """Multislice CBED with V_g / q_z labels from a SPECIMENS folder into HDF5 shards.

    Writes OUT/shard-NNNNNN.h5 (cbed, probe, vg, qz: float32 n×H×W, q = 0 at (H//2, W//2),
    pixel size in Å⁻¹ recorded) and OUT/index.json (config, seed, software, splits by crystal).
    A killed run restarted with the same command resumes. With --structure FILE (and no
    SPECIMENS) one crystal is simulated and OUT/patterns.png drawn.
    """
    from pathlib import Path

    from .simulation.runner import simulate_dataset

    cfg = _load_explicit("simulate", config_path, {
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
            from .specimens.supercell import single_structure_specimens, write_specimens

            rows, crystals, header = single_structure_specimens(
                structure, zone_axis or (0, 0, 1), _floats(thickness, "thickness") or [100.0], phi or 0.0,
                tilt or (0.0, 0.0), lateral_size or 40.0, seed=cfg["seed"],
                strain=tuple(v / 100.0 for v in (strain_pct or (0.0, 0.0, 0.0))))
            from .simulation.runner import SINGLE_SPECIMEN

            specimens = out_dir / SINGLE_SPECIMEN
            if out_dir.exists() and not (out_dir / "run.json").exists() and any(out_dir.iterdir()) and not overwrite:
                raise FourdError(f"output folder {out_dir} exists and is not a fourdcrystal dataset; choose another --out "
                                 f"or pass --overwrite")
            write_specimens(specimens, rows, crystals, header, overwrite=True)
        elif specimens is None:
            raise FourdError("give a SPECIMENS folder (from fourdcrystal supercell) or --structure FILE")
        elif any(v is not None for v in (zone_axis, thickness, lateral_size, phi, tilt, strain_pct)):
            raise FourdError("--zone-axis/--thickness/--lateral-size/--phi/--tilt/--strain belong to --structure mode; "
                             "with a SPECIMENS folder they come from the manifest")
        index = simulate_dataset(specimens, cfg, workers=cfg["workers"], scheduler=scheduler, overwrite=overwrite)
    run = index["run"]
    rate = f", {run['patterns'] / run['seconds']:.2f} patterns/s" if run["patterns"] else " (all shards were done)"
    c = index["split_counts"]
    click.echo(f"{index['samples']} samples in {len(index['shards'])} shards (train {c['train']}, val {c['val']}, "
               f"test {c['test']}){rate}; wrote {out_dir / 'index.json'}")
    if structure is not None:
        from .simulation.inspect import dataset_montage

        path = dataset_montage(out_dir, out_dir / "patterns.png", count=index["samples"])
        click.echo(f"wrote {path}")


@cli.command("inspect")
@click.argument("dataset", type=click.Path())
@_config_option("inspect")
@_opt("inspect", "samples", "--samples", type=int, help="Samples in the PNG montage (0: no montage).")
@click.option("--png", type=click.Path(dir_okay=False), help="Montage path. [default: DATASET/inspect.png]")
@_opt("inspect", "seed", "--seed", type=int, help="Which samples are drawn.")
def inspect_cmd(dataset, config_path, samples, png, seed) -> None:
    """Counts per split / prototype / thickness (Å) of a DATASET, and a PNG montage of samples.

    The montage shows cbed, probe and vg on a log scale and qz (Å⁻¹) where vg is strong.
    """
    from pathlib import Path

    from .simulation.inspect import dataset_montage, dataset_summary

    cfg = _load("inspect", config_path)
    if cfg["samples"] > 0:
        from .atomic import check_name_length, check_writable

        if png:
            check_name_length(png, "--png")
        check_writable(Path(png).parent if png else Path(dataset), "montage")
    click.echo(dataset_summary(dataset))
    if cfg["samples"] > 0:
        path = dataset_montage(dataset, png or Path(dataset) / "inspect.png", count=cfg["samples"], seed=cfg["seed"])
        click.echo(f"wrote {path}")


@cli.command("truth")
@click.argument("dataset", type=click.Path())
@click.option("--specimens", type=click.Path(file_okay=False),
              help="The specimens folder DATASET was simulated from. [default: the one index.json records]")
@click.option("--overwrite", is_flag=True, help="Recompute the truth of shards that already hold it.")
@click.pass_context
def truth_cmd(ctx, dataset, specimens, overwrite) -> None:
    """Add the physical truth to a DATASET simulated without it; no pattern is simulated again.

    For every pattern: each reflection's h k l, exact position (q_x, q_y) in Å⁻¹ from the
    specimen's lattice, orientation, tilt and strain, kinematic |V_g| in V, excitation error in
    Å⁻¹, and its strength in the pattern (mean disk intensity over the zero beam's). `evaluate`
    and `tune` score against it. Shards are rewritten one at a time, atomically; a rerun resumes.
    """
    from pathlib import Path

    from .simulation.runner import add_truth

    with rank_zero_lock(Path(dataset)):
        done = add_truth(dataset, specimens, overwrite=overwrite, progress_bar=not ctx.obj.get("quiet"))
    click.echo(f"truth added to {done['done']} of {done['shards']} shards ({done['samples']} patterns, "
               f"{done['skipped']} shards already had it) in {done['seconds']:.0f} s; {dataset}")


@cli.command("train")
@click.argument("dataset", required=False, type=click.Path())
@_config_option("train")
@_opt("train", "out", "--out", type=click.Path(file_okay=False), help="Output folder for model.pt + model.json.")
@_opt("train", "epochs", "--epochs", type=int, help="Training epochs.")
@_opt("train", "crop_px", "--crop", "crop_px", type=int, default_text="whole patterns",
      help="Train on random CROP×CROP windows of the patterns (pixels, a multiple of 2^depth; ~(side/CROP)² cheaper "
           "per step); validation and prediction run on whole patterns.")
@_opt("train", "batch_size", "--batch-size", type=int, help="Patterns per step and process.")
@_opt("train", "lr", "--lr", type=float, help="Peak learning rate (AdamW).")
@click.option("--schedule", type=click.Choice(["cosine", "noam", "constant"]), help="LR schedule after warm-up.")
@click.option("--domain", type=click.Choice(["pattern", "spectral"]),
              help="pattern: real U-Net on the probe cross-correlation map and the pattern (default); spectral: "
                   "crystal4D's complex U-Net on the Fourier-space cross-correlation.")
@_opt("train", "model.width", "--width", type=int, help="Channels at the first U-Net level (complex for spectral).")
@_opt("train", "model.depth", "--depth", type=int, help="U-Net down-samplings.")
@click.option("--decoders", type=click.Choice(["1", "2"]), help="1: shared decoder for vg and qz; 2: one each.")
@_opt("train", "model.dropout", "--dropout", type=float, help="Dropout probability.")
@click.option("--loss-weighting", type=click.Choice(["uncertainty", "fixed"]), help="Task weighting of the loss.")
@click.option("--no-augment", is_flag=True, help="Train on the clean simulated patterns.")
@_opt("train", "loader_workers", "--loader-workers", type=int, help="DataLoader worker processes.")
@_opt("train", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@_opt("train", "seed", "--seed", type=int, help="Random seed.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that holds another run.")
@click.option("--epochs-this-run", type=int, help="Stop after this many epochs (job time limits); --resume continues.")
@click.option("--init", "init", type=click.Path(dir_okay=False), help="Start from a trained model.pt (fine-tuning).")
@click.option("--summary", is_flag=True, help="Print parameter count and FLOPs per pattern, then exit.")
def train_cmd(dataset, config_path, out, epochs, crop_px, batch_size, lr, schedule, domain, width, depth, decoders, dropout,
              loss_weighting, no_augment, loader_workers, device, seed, resume, overwrite, epochs_this_run, init,
              summary) -> None:
    """Train FCU-Net on a DATASET from fourdcrystal simulate (train split; val split for selection).

    Writes OUT/model.pt (weights) + OUT/model.json (card: sha256, architecture, input pixel
    size in Å⁻¹ and H×W, label normalisation, data hash, metrics), OUT/checkpoint.pt every
    epoch, OUT/metrics.jsonl and OUT/curves.png. Several GPUs or nodes:
    torchrun --nproc_per_node N -m fourdcrystal train DATASET ...
    """
    from pathlib import Path


    cfg = _load_explicit("train", config_path, {
        "out": out, "epochs": epochs, "crop_px": crop_px, "batch_size": batch_size, "lr": lr, "schedule": schedule,
        "model.domain": domain, "model.width": width, "model.depth": depth,
        "model.decoders": int(decoders) if decoders else None,
        "model.dropout": dropout, "loss_weighting": loss_weighting, "augment.enabled": False if no_augment else None,
        "loader_workers": loader_workers, "device": device, "seed": seed})
    if summary:
        from .training.loop import model_summary

        shape = (256, 256)
        if dataset is not None:
            from .simulation.shards import read_index

            px = read_index(dataset).get("config", {}).get("output_px", 256)
            shape = (px, px)
        s = model_summary(cfg, shape)
        click.echo(f"FCU-Net {s['architecture']} on {shape[0]}×{shape[1]} patterns: {s['parameters']:,} parameters, "
                   f"{s['flops_per_pattern'] / 1e9:.2f} GFLOP per pattern forward (convolutions; FFTs add "
                   f"~{s['fft_flops_estimate'] / 1e9:.3f} GFLOP)")
        return
    if dataset is None:
        raise FourdError("give a DATASET folder (from fourdcrystal simulate)")
    from .api import train
    from .settings import TrainSettings

    result = train(dataset, TrainSettings(**cfg), resume=resume, overwrite=overwrite, epochs_this_run=epochs_this_run,
                   init=init)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if not result["finished"]:
        click.echo(f"stopped after epoch {result['epoch']} of {result['epochs']}; continue with the same command "
                   f"and --resume")
        return
    card = result["card"]
    best = card["metrics"]["best_val"]
    click.echo(f"trained {result['epoch']} epochs ({card['training']['stopped_by']}); best epoch "
               f"{card['training']['best_epoch']}: val vg MSE {best.get('val_vg_mse', float('nan')):.4g}, "
               f"val qz wMSE {best.get('val_qz_wmse', float('nan')):.4g}; wrote {Path(result['out']) / 'model.pt'} "
               f"+ model.json")


def _match_radius_option(section: str):
    return _opt(section, "match_radius_px", "--match-radius", type=float,
                help="A peak within this many pixels of a reflection's exact position counts as found (at most half "
                     "the spacing of the pattern's visible reflections).")


@cli.command("strain-benchmark")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--model", default=None, help="model.pt with its card, or a shipped name. [default: release]")
@click.option("--crystals", default="Si,SrTiO3,GaN,TiO2", show_default=True,
              help="Comma-separated built-in crystals (cubic Si and SrTiO3, hexagonal GaN, tetragonal TiO2).")
@click.option("--zone-axes", type=int, default=2, show_default=True, help="Zone axes per crystal (1 or 2).")
@click.option("--scan", type=int, nargs=2, default=(3, 3), show_default=True,
              help="Positions per series, ROWS COLS; position (0, 0) is the unstrained reference.")
@click.option("--thicknesses", default="100,300,600,1000", show_default=True, help="Thicknesses, Å.")
@click.option("--doses", default="clean,1e5,1e4,1e3", show_default=True,
              help="clean and / or electrons per pattern (Poisson counts).")
@click.option("--strain-pct", type=float, default=1.0, show_default=True, help="Strain per component up to ± this, %.")
@click.option("--rotation-deg", type=float, default=2.0, show_default=True, help="In-plane rotations up to ± this, °.")
@click.option("--energy", type=float, default=200e3, show_default=True, help="Beam energy, eV.")
@click.option("--semiangle", type=float, default=2.0, show_default=True, help="Convergence semi-angle, mrad.")
@click.option("--box", type=float, default=60.0, show_default=True,
              help="Simulated cut box side, Å; the detector pixel is DETECTOR_BIN/box Å⁻¹.")
@click.option("--px", type=int, default=256, show_default=True, help="Detector pixels per side.")
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
def strain_benchmark_cmd(out, model, crystals, zone_axes, scan, thicknesses, doses, strain_pct, rotation_deg, energy,
                         semiangle, box, px, detector_bin, seed, threads, py4dstem_python, py4dstem_settings) -> None:
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

    from .evaluation.strain_benchmark import StrainBenchmarkConfig, format_table, run_benchmark, tuned_py4dstem_settings

    def floats(text, name):
        try:
            return tuple(float(x) for x in text.split(","))
        except ValueError:
            raise FourdError(f"{name} {text!r}: expected comma-separated numbers") from None

    config = StrainBenchmarkConfig(
        crystals=tuple(c.strip() for c in crystals.split(",") if c.strip()), zone_axes_per_crystal=zone_axes,
        scan=tuple(scan), strain_pct=strain_pct, rotation_deg=rotation_deg,
        thicknesses_A=floats(thicknesses, "--thicknesses"), energy_eV=energy, semiangle_mrad=semiangle,
        box_A=box, output_px=px, detector_bin=detector_bin, doses=tuple(d.strip() for d in doses.split(",")), seed=seed,
        threads=threads).check()
    p4d = None
    if py4dstem_python:
        if not Path(py4dstem_python).is_file():
            raise FourdError(f"--py4dstem-python {py4dstem_python}: no such file")
        p4d = tuned_py4dstem_settings(py4dstem_settings, model, config.k_pixel_invA)
    report = run_benchmark(out, model, config, py4dstem_python, p4d)
    click.echo(format_table(report))
    click.echo(f"wrote {Path(out) / 'report.json'}, {Path(out) / 'report.png'}")


@cli.command("evaluate")
@click.argument("model", type=click.Path())
@click.argument("dataset", type=click.Path())
@_config_option("evaluate")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder. [default: MODEL's folder/evaluation]")
@_opt("evaluate", "split", "--split", type=click.Choice(["test", "val", "train"]),
      help="Which split of DATASET (test: crystals never seen in training).")
@_opt("evaluate", "doses", "--doses", help="Electrons per pattern, comma-separated; 'clean' = the noise-free simulation.")
@_match_radius_option("evaluate")
@_opt("evaluate", "label_min_relative", "--label-min-relative", type=float,
      help="The secondary V_g label score: maxima of the label V_g ≥ this fraction of the zero beam's.")
@_opt("evaluate", "min_relative", "--min-relative", type=float,
      help="Model peaks: maxima of the predicted V_g ≥ this fraction of the zero beam's V_g (or of the strongest "
           "maximum, where the card's tuned threshold is relative to that), for every pattern whatever its dose.",
      default_text="the threshold tuned on the validation split, from the model card")
@_opt("evaluate", "limit", "--limit", type=int, help="Only the first N patterns of the split.", default_text="all")
@_opt("evaluate", "batch_size", "--batch-size", type=int, help="Patterns per model batch.")
@_opt("evaluate", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@_opt("evaluate", "tta", "--tta", type=click.Choice(["none", "flips", "d4"]),
      help="Test-time mirrors: average the network over the pattern's mirrors about the zero beam (flips: 4 passes, "
           "d4: 8; that many times the network time).")
@_opt("evaluate", "precision", "--precision", type=click.Choice(["auto", "fp32", "bf16"]),
      help="The network's arithmetic: fp32, bf16 (its convolutions in bfloat16 under autocast, the FFTs in "
           "float32: about twice the network's speed on a CPU with AVX-512 BF16, and the fp32 F1 to ±0.001 on the "
           "test split, docs/reference.md), or auto: bf16 where the CPU or GPU does it in hardware and the "
           "network is 16 or more channels wide, else fp32.")
@_opt("evaluate", "seed", "--seed", type=int, help="Seed of the shot noise.")
@_opt("evaluate", "thick_from_A", "--thick-from", type=float, help="Also report the patterns at least this thick (Å) "
                                                                   "together.")
def evaluate_cmd(model, dataset, config_path, out, **_options) -> None:
    """Compare MODEL (model.pt with its card; "release": the shipped model) and the classical baseline on DATASET.

    Both methods see the same patterns, clean and at each dose, and use the peak settings tuned
    on the validation split and stored in the model card (fourdcrystal tune). Peaks are scored
    against the physical truth in the shards (every reflection's exact position from the
    specimen's lattice, orientation, tilt and strain; `fourdcrystal truth` adds it to old data
    sets): precision, recall, F1, rms position error (px and Å⁻¹) and its bias by |g|, intensity
    correlation with the kinematic |V_g| and q_z error, by dose, thickness (< 200, 200–400,
    ≥ 400 Å), beam energy, semi-angle and zone-axis index; the score against the V_g label maps is a
    secondary table. The out-of-plane crystal tilt (mrad) of the patterns tilted ≤ 8 mrad is scored
    against the shards' true tilt, beside answering zero: the classical Laue fit on the baseline's
    disks, the same fit on the model's vectors and the model's q_z (failed fits counted). Writes
    OUT/report.json, OUT/metrics_vs_thickness.png and OUT/worst.png, and prints the tables.
    """
    from pathlib import Path

    from .api import evaluate
    from .evaluation.evaluate import format_table
    from .settings import EvaluateSettings

    c = _load("evaluate", config_path)
    out = Path(out) if out else Path(model).parent / "evaluation"
    report = evaluate(model, dataset, out, EvaluateSettings(**c))
    click.echo(f"{report['patterns']} {c['split']} patterns of {dataset}")
    click.echo(format_table(report))
    click.echo(f"wrote {out / 'report.json'}, {out / 'metrics_vs_thickness.png'}, {out / 'worst.png'}")


@cli.command("tune")
@click.argument("model", type=click.Path())
@click.argument("dataset", type=click.Path())
@_config_option("tune")
@_opt("tune", "split", "--split", type=click.Choice(["val", "train", "test"]),
      help="The split to tune on (val: never trained on, never tested on).")
@_opt("tune", "doses", "--doses", help="Electrons per pattern, comma-separated; the mean F1 over them is maximised.")
@_match_radius_option("tune")
@_opt("tune", "limit", "--limit", type=int, help="Only the first N patterns of the split.", default_text="all")
@_opt("tune", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--strain-benchmark", type=click.Path(file_okay=False),
              help="A fourdcrystal strain-benchmark folder: among the model thresholds within 0.01 of the best mean "
                   "F1, take the one whose vectors fit the strain of its tuning series best (rms strain error, %).")
@click.option("--dry-run", is_flag=True, help="Print the chosen settings; do not write them into the card.")
def tune_cmd(model, dataset, config_path, dry_run, strain_benchmark, **_options) -> None:
    """Choose the peak settings of MODEL and of the classical baseline on DATASET's validation split.

    Grid search (the same patterns and Poisson draws for both methods): the model's V_g
    threshold and spacing, the baseline's correlation power, smoothing (px), threshold and
    spacing, each maximising the F1 averaged over the doses; then each method's sub-pixel
    placement by rms position error. Writes the settings and their validation scores into
    MODEL's card (section "peaks"); evaluate and predict use them from then on.
    """
    from .api import tune
    from .evaluation.tune import format_tuning
    from .model.card import card_path, resolve_weights
    from .settings import TuneSettings

    c = _load("tune", config_path)
    section = tune(model, dataset, TuneSettings(**c), strain_benchmark=strain_benchmark, write=not dry_run)
    click.echo(f"tuned on {section['tuned_on']['patterns']} {c['split']} patterns of {dataset}")
    click.echo(format_tuning(section))
    if dry_run:
        return

    click.echo(f"wrote the settings into {card_path(resolve_weights(model))}")


def _pair(text: str | None, option: str, kind=float, sep: str = ","):
    """``"A,B"`` (or ``"AxB"`` with sep="x") → (A, B); one line naming the option when malformed."""
    if text is None:
        return None
    parts = text.lower().split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return kind(parts[0]), kind(parts[1])
    except ValueError:
        raise FourdError(f"{option} {text!r}: expected two numbers separated by {sep!r}") from None


@cli.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="DATA")
@_config_option("predict")
@click.option("--model", "model_opt", type=str, help="A model.pt with its card, or release. The older form "
              "`predict MODEL DATA` (MODEL first) still works. [default: release, the model shipped in the package]")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Result HDF5 file. [default: DATA's name with -bragg.h5, in the current folder]")
@_opt("predict", "k_pixel_invA", "--k-pixel", type=float, help="Detector pixel size in Å⁻¹ (overrides the file's).",
      default_text="from the file, or --camera-length")
@_opt("predict", "camera_length_mm", "--camera-length", type=float,
      help="Camera length in mm; with --detector-pixel and --energy gives the pixel size.")
@_opt("predict", "detector_pixel_um", "--detector-pixel", type=float, help="Detector pixel pitch in µm (e.g. 55).")
@_opt("predict", "energy_eV", "--energy", type=float, help="Beam energy in eV, e.g. 300e3 (overrides the file's).",
      default_text="from the file")
@_opt("predict", "semiangle_mrad", "--semiangle", type=float,
      help="Convergence semi-angle in mrad (overrides the file's).", default_text="from the file")
@_opt("predict", "probe", "--probe", help="Vacuum probe: a 2D .npy or FILE.h5:/path from the same detector (a 4D "
                                          "vacuum scan is averaged).", default_text="--vacuum, else an ideal aperture")
@_opt("predict", "vacuum", "--vacuum", help="Vacuum probe from the mean of a scan region R0:R1,C0:C1 (rows, columns; "
                                            "end exclusive).")
@click.option("--centre", help="Zero-beam position on the detector, I,J in pixels. [default: found in the mean pattern]")
@click.option("--scan-shape", help="ROWSxCOLS, for files that do not store it (.mib without its .hdr; TVIPS and MRC "
              "stacks of frames); a square frame count is otherwise taken, and said.")
@_opt("predict", "method", "--method", type=click.Choice(["auto", "model", "baseline", "both"]),
      help="Whose vectors are the result (strain and export read them unless told otherwise): auto, the method "
           "the model card's test F1 shows best at the scan's counts per pattern (judged from a sample of its "
           "patterns; said on screen and kept in the file), model, baseline, or both (both run, auto chooses).")
@_opt("predict", "baseline", "--baseline", is_flag=True,
      help="Also run the classical detector (py4DSTEM-style) into the file.")
@_opt("predict", "maps", "--maps", is_flag=True, help="Also store the full predicted V_g and q_z per position (float16).")
@_opt("predict", "min_relative", "--min-relative", type=float,
      help="Keep predicted peaks with V_g ≥ this fraction of the zero beam's V_g (or of the strongest maximum, "
           "where the card's tuned threshold is relative to that), for every pattern whatever its dose.",
      default_text="the thresholds tuned on the validation split, from the model card (one for patterns "
                   "under the card's low_dose_e electrons, judged from their counts)")
@_opt("predict", "mask", "--mask", help="Detector mask: a 2D .npy or FILE.h5:/path of the detector's shape, nonzero "
                                        "where pixels are to be ignored (beam stop, bad pixels). Dead regions are "
                                        "found by themselves.")
@_opt("predict", "max_peaks", "--max-peaks", type=int,
      help="At most this many peaks per pattern and method; a warning says when any position reaches it.",
      default_text="the card's, 400")
@_opt("predict", "chunk", "--chunk", type=int, help="Scan positions read and processed together.")
@_opt("predict", "batch_size", "--batch-size", type=int, help="Patterns per network call.")
@_opt("predict", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@_opt("predict", "tta", "--tta", type=click.Choice(["none", "flips", "d4"]),
      help="Test-time mirrors: average the network over the pattern's mirrors about the zero beam (flips: 4 passes, "
           "d4: 8; that many times the network time). Measured in docs/model.md, \"Test-time mirrors\".")
@_opt("predict", "precision", "--precision", type=click.Choice(["auto", "fp32", "bf16"]),
      help="The network's arithmetic: fp32, bf16 (its convolutions in bfloat16 under autocast, the FFTs in "
           "float32: about twice the network's speed on a CPU with AVX-512 BF16, and the fp32 F1 to ±0.001 on the "
           "test split, docs/reference.md), or auto: bf16 where the CPU or GPU does it in hardware and the "
           "network is 16 or more channels wide, else fp32.")
@_opt("predict", "prepare_first", "--prepare-first", type=int,
      help="Find the zero beam, dead pixels and the counts per pattern from the first N scan positions only. With "
           "--follow this is the first chunk; an offline run given the same N (and --chunk) gives the same vectors.",
      default_text="patterns spread over the whole scan; the first chunk with --follow")
@click.option("--follow", is_flag=True,
              help="The file is still being written (Merlin .mib with its .hdr, or HDF5 in SWMR mode): process each "
                   "chunk as its frames land, redraw OUT's PNG (virtual bright field and Bragg vector map so far) and "
                   "print the processing rate against the arrival rate every --refresh seconds; end when the scan is "
                   "complete. A file that stops growing for --idle seconds ends the run with the positions done kept "
                   "(rerun to go on).")
@_opt("predict", "idle", "--idle", type=float, help="--follow: stop when the file has not grown for this many seconds.")
@_opt("predict", "refresh", "--refresh", type=float,
      help="--follow: redraw the live picture and print the rates at most every this many seconds.")
@_opt("predict", "scheduler", "--scheduler",
      help="Address of a dask.distributed scheduler (tcp://HOST:PORT) to spread chunks over.", default_text="local")
@_opt("predict", "qz", "--qz/--no-qz", default_text="when the model card's test evaluation shows q_z skill",
      help="Write the model's q_z (Å⁻¹) of each Bragg vector.")
@_opt("predict", "tilt", "--tilt/--no-tilt", default_text="the model's q_z tilt where its card shows it ahead",
      help="Write each method's crystal tilt (θx, θy) per position and its standard error, in mrad: the zone axis "
           "points along (tan θx, tan θy, 1) from the beam, x and y along the detector's first and second axes "
           "(as qx, qy); a rotated crystal reads +θ, a tilted beam −θ. The baseline's: fitted to the Laue circle the "
           "Friedel pairs of disks trace (about 0.1 s per pattern); the model's: from its q_z where the model card "
           "shows that ahead at the scan's dose, else the same fit. NaN where a fit fails. --tilt needs the beam "
           "energy (--energy or the file's); by default only the model's q_z tilt is written, where the card shows "
           "it ahead (no energy needed).")
@click.option("--overwrite", is_flag=True, help="Replace an existing result (or an unfinished run with other settings).")
def predict_cmd(paths, config_path, model_opt, out, centre, scan_shape, overwrite, follow, **_options) -> None:
    """Bragg vectors from the 4D-STEM file DATA with a model (--model: model.pt with its card).

    Without --model (or with --model release) the model shipped inside the package runs; its card
    (fourdcrystal/data/fcunet-release.json) states what it was trained on.

    DATA: FILE.npy, FILE.h5[:/dataset], py4DSTEM EMD 1.0, Merlin .mib (with its .hdr), fpd HDF5, and
    through RosettaSciIO .hspy, .blo, TVIPS .tvips and MRC .mrc (stacks of frames: give --scan-shape
    unless the scan is square), .dm3/.dm4, EMPAD .xml, FEI .ser, Arina *_master.h5. Patterns are resampled to the model's
    pixel size (Å⁻¹) on a grid that holds the whole detector, centred on the zero beam, read in
    chunks (memory stays flat), and the run resumes where it stopped if killed. Peaks are reported
    only where the detector recorded data, one disk radius away from its edges, dead regions and
    --mask; with the peak settings tuned on the validation split (model card). Writes OUT (HDF5: ragged Bragg vectors in Å⁻¹ per scan
    position, counts, virtual bright field, Bragg vector map) and OUT with .png (a summary).
    """
    from .api import predict
    from .settings import PredictSettings

    if len(paths) > 2 or (len(paths) == 2 and model_opt is not None):
        raise FourdError(f"expected DATA [--model MODEL] (or MODEL DATA), got {len(paths)} arguments"
                         + (" and --model" if model_opt is not None else "") + f": {' '.join(paths)}")
    model, data = (model_opt, paths[0]) if len(paths) == 1 else paths
    res = predict(data, out, PredictSettings(**_load("predict", config_path)), model=model,
                  centre_px=_pair(centre, "--centre"), scan_shape=_pair(scan_shape, "--scan-shape", int, "x"),
                  overwrite=overwrite, follow=follow)
    rate = f"{res['patterns_per_s']:.1f} patterns/s" if res["patterns_per_s"] else "nothing left to do"
    vec = ", ".join(f"{m} {n}" for m, n in res["vectors"].items())
    cal, src = res["calibration"], res["calibration"]["sources"]
    click.echo(f"calibration: pixel size {cal['k_pixel_invA']:.5f} Å⁻¹ ({src.get('k_pixel_invA', 'file')})"
               + (f", {cal['energy_eV'] / 1e3:g} kV ({src.get('energy_eV', 'file')})" if cal["energy_eV"] else "")
               + (f", {cal['semiangle_mrad']:g} mrad ({src.get('semiangle_mrad', 'file')})"
                  if cal["semiangle_mrad"] else "")
               + f"; zero beam at ({res['centre_px'][0]:.1f}, {res['centre_px'][1]:.1f}) px ({res['centre_source']});"
                 f" probe: {res['probe_source']}")
    click.echo(f"{res['positions']} positions ({rate}); Bragg vectors: {vec}")
    click.echo(f"result: the {res['method']} vectors ({res['method_reason']})")
    for m, t in res.get("tilt", {}).items():
        click.echo(f"tilt ({m}, {t['source']}): fitted at {t['fitted']} of {res['positions']} positions"
                   + (f" ({res['tilt_reason']})" if m == "model" and res.get("tilt_reason") else ""))
    click.echo(f"wrote {res['out']} and {res['png']}")


@cli.command("strain")
@click.argument("vectors", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Strain maps HDF5 (a PNG beside it). [default: VECTORS's name with -strain.h5]")
@_config_option("strain")
@_opt("strain", "method", "--method", type=click.Choice(["auto", "model", "baseline"]),
      help="Which vectors of a predict result: auto, the ones predict chose (--method there); the model's; or the "
           "classical baseline's.")
@_opt("strain", "reference", "--reference",
              help="Unstrained reference: median (the median lattice of the scan), a scan region R0:R1,C0:C1 (rows, "
                   "columns; end exclusive; its median lattice), or crystal (the lattice of --structure along "
                   "--zone-axis: absolute strain, as good as the pixel-size calibration).")
@click.option("--structure", type=click.Path(), help="With --reference crystal: the crystal's CIF/POSCAR file.")
@click.option("--zone-axis", type=int, nargs=3, help="With --reference crystal: the zone axis U V W (conventional cell).")
@click.option("--g1", help="First reciprocal basis vector QX,QY in the file's units (Å⁻¹). [default: found from the "
                           "Bragg vector map]")
@click.option("--g2", help="Second reciprocal basis vector QX,QY (Å⁻¹); with --g1.")
@_opt("strain", "tolerance", "--tolerance", type=float,
              help="Index a vector when it lies within this fraction of |shortest g| of a lattice point.")
@_opt("strain", "min_vectors", "--min-vectors", type=int,
              help="Positions with fewer indexed vectors (zero beam included) are not fitted (NaN, grey).")
@_opt("strain", "scan_step_nm", "--scan-step", type=float,
      help="Scan step in nm: the maps' axes in nm.",
      default_text="the data file's real-space calibration where predict found one (EMD R_pixel_size), else the "
                   "maps are in scan positions")
@_opt("strain", "weights", "--weights", type=click.Choice(["auto", "intensity", "squared", "quartic", "none"]),
              help="Least-squares weights of the vectors: their intensity, its square, its fourth power, or equal; "
                   "auto: quartic for model vectors (their V_g heights: a faint peak's errors are more than its "
                   "counts say), equal for correlation peaks (baseline, py4DSTEM), as chosen on the strain survey's "
                   "tuning series.")
@_opt("strain", "min_indexed_fraction", "--min-indexed-fraction", type=float,
      help="Positions with less of the vectors' weight on the fitted lattice are not fitted (NaN, counted): several "
           "grains, rings or amorphous material are not one lattice.")
@_opt("strain", "correct", "--correct", type=click.Choice(["none", "reference"]),
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
    """
    import numpy as np

    from .api import strain
    from .settings import StrainSettings

    c = _load("strain", config_path)
    min_vectors = c["min_vectors"]
    res = strain(vectors, out, StrainSettings(**c), structure=structure, zone_axis=zone_axis,
                 g1=_pair(g1, "--g1", float), g2=_pair(g2, "--g2", float), overwrite=overwrite)
    g = res["reference_basis"]
    click.echo(f"reference lattice g1 = ({g[0][0]:.5f}, {g[1][0]:.5f}), g2 = ({g[0][1]:.5f}, {g[1][1]:.5f}) "
               f"{res['units']}" + (f" (the crystal's, {100 * res['maps']['crystal_mismatch']:.2f} % from the "
                                    f"scan's median lattice)" if res["maps"]["crystal_mismatch"] is not None else ""))
    click.echo(f"scan step: {res['scan_step_nm']:g} nm ({res['scan_step_source']})" if res["scan_step_nm"] else
               f"scan step: unknown, maps in scan positions ({res['scan_step_source']})")
    m = res["maps"]
    ok = m["fit_ok"]
    if ok.any():
        click.echo("over the fitted positions: " + ", ".join(
            f"{k} {100 * np.nanmedian(m[k][ok]):+.3f} % (spread {100 * np.nanstd(m[k][ok]):.3f} %)"
            for k in ("exx", "eyy", "exy")) + f", θ spread {np.nanstd(m['theta_deg'][ok]):.3f}°")
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
    from .api import export

    vs = export(vectors, out, method=method, overwrite=overwrite)
    click.echo(f"wrote {out} ({int(vs.offsets[-1])} {vs.method} vectors, {vs.scan_shape[0]}×{vs.scan_shape[1]} scan); "
               f"py4DSTEM.read() loads it as BraggVectors")


@cli.command("quickstart")
@click.option("--config", "config_path", type=str, default="quickstart",
              show_default=True, help="YAML config with a section per stage (their `out` folders, relative to the "
                                      "current folder, hold the results), or "
                                      f"{_shipped_text('select', 'supercell', 'simulate', 'train')}.")
@click.pass_context
def quickstart_cmd(ctx: click.Context, config_path) -> None:
    """Run every stage once: select → supercell → simulate → train → evaluate → shipped → predict.

    train and evaluate make and score a small smoke model (a pipeline check, not a usable model);
    shipped scores the model shipped in the package on the same test split, and predict runs it
    with the classical baseline on a demo 4D-STEM scan made from the test split (crystals neither
    model saw). Finished stages are reused on a second run (delete a stage's folder to redo it).
    Ends by printing where every output is and the shipped model's table beside the baseline.
    """
    import json
    import time
    from pathlib import Path

    from .config import load_config
    from .evaluation.evaluate import format_table
    from .quickstart import DEMO_RESULT, DEMO_SCAN, SHIPPED_EVALUATION, STAGES, demo_scan, finished

    from .config import config_path as resolve_config
    from .config import shipped_configs

    if not resolve_config(config_path).exists():
        raise FourdError(f"--config {config_path} not found; give a config file or one of "
                         f"{', '.join(shipped_configs('select', 'supercell', 'simulate', 'train'))}")
    cfg = {s: load_config(s, config_path, {}) for s in ("select", "supercell", "simulate", "train")}
    root = Path(cfg["train"]["out"]).parent
    model = Path(cfg["train"]["out"]) / "model.pt"
    dataset = cfg["simulate"]["out"]
    scan = root / DEMO_SCAN
    result = root / DEMO_RESULT
    run = {
        "select": lambda: ctx.invoke(select_cmd, config_path=config_path),
        "supercell": lambda: ctx.invoke(supercell_cmd, catalogue=cfg["select"]["out"], config_path=config_path),
        "simulate": lambda: ctx.invoke(simulate_cmd, specimens=cfg["supercell"]["out"], config_path=config_path),
        "train": lambda: ctx.invoke(train_cmd, dataset=dataset, config_path=config_path,
                                    resume=(Path(cfg["train"]["out"]) / "checkpoint.pt").exists()),
        "evaluate": lambda: ctx.invoke(evaluate_cmd, model=str(model), dataset=dataset),
        "shipped": lambda: ctx.invoke(evaluate_cmd, model="release", dataset=dataset,
                                      out=str(root / SHIPPED_EVALUATION)),
        "predict": lambda: (demo_scan(dataset, scan),
                            ctx.invoke(predict_cmd, paths=("release", str(scan)), out=str(result), baseline=True,
                                       overwrite=True)),
    }
    t_all = time.perf_counter()
    for n, stage in enumerate(STAGES, 1):
        if finished(stage, cfg, root):
            click.echo(f"[{n}/{len(STAGES)}] {stage}: done before, reused")
            continue
        click.echo(f"[{n}/{len(STAGES)}] {stage}")
        t0 = time.perf_counter()
        run[stage]()
        click.echo(f"[{n}/{len(STAGES)}] {stage}: {time.perf_counter() - t0:.0f} s")
    smoke = json.loads((model.parent / "evaluation" / "report.json").read_text())
    shipped = json.loads((root / SHIPPED_EVALUATION / "report.json").read_text())
    click.echo(f"\nquickstart finished in {time.perf_counter() - t_all:.0f} s. Outputs:")
    for what, path in (("catalogue", Path(cfg["select"]["out"]) / "catalogue.json"),
                       ("specimens", Path(cfg["supercell"]["out"]) / "manifest.json"),
                       ("dataset", Path(dataset) / "index.json"), ("smoke model", model),
                       ("training curves", model.parent / "curves.png"),
                       ("smoke evaluation", model.parent / "evaluation" / "report.json"),
                       ("its plots", model.parent / "evaluation" / "metrics_vs_thickness.png"),
                       ("its worst patterns", model.parent / "evaluation" / "worst.png"),
                       ("shipped evaluation", root / SHIPPED_EVALUATION / "report.json"),
                       ("its plots", root / SHIPPED_EVALUATION / "metrics_vs_thickness.png"),
                       ("its worst patterns", root / SHIPPED_EVALUATION / "worst.png"),
                       ("demo 4D-STEM scan", scan), ("Bragg vectors", result), ("summary", result.with_suffix(".png"))):
        click.echo(f"  {what:>18s}: {path}")
    f1 = {m: smoke["overall"][m]["f1"] for m in ("model", "baseline")}
    click.echo(f"\npipeline check: the {cfg['train']['epochs']}-epoch smoke model trained here scores F1 "
               f"{f1['model']:.2f} (the baseline beside it, with the untuned default settings of an untuned card, "
               f"{f1['baseline']:.2f}): training runs end to end; it is not a usable model, and neither number is "
               f"the table's below.")
    click.echo(f"\nthe model shipped in the package on {shipped['patterns']} {shipped['split']} patterns of this dataset "
               f"(crystals it never saw), beside the tuned classical baseline; the demo scan's Bragg vectors are "
               f"its too:")
    click.echo(format_table(shipped))


def main() -> None:
    cli(prog_name="fourdcrystal")


if __name__ == "__main__":
    main()
