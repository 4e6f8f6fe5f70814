"""`fourdcrystal select`."""

from __future__ import annotations

import click

from ..errors import FourdError
from .common import config_option, load_explicit, opt
from .group import cli


@cli.command("select")
@config_option("select")
@opt("select", "sources", "--source", "sources", multiple=True,
     type=click.Choice(["aflow", "decorated", "mp", "files"]),
     help="Crystal source, repeatable: aflow (embedded AFLOW prototype library, offline), decorated (those "
           "prototypes with chemically similar elements, offline), mp (Materials Project, needs MP_API_KEY), files "
           "(CIF/POSCAR folders).")
@opt("select", "out", "--out", type=click.Path(file_okay=False), help="Output catalogue folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--dry-run", is_flag=True, help="Print the summary table only; write nothing.")
@click.option("--per-prototype", help="Crystals drawn per prototype group of N: sqrt (round(√N)), all, or an integer K.")
@click.option("--max-crystals", type=int, help="Cap on the number of crystals (trims depth before prototypes).")
@opt("select", "seed", "--seed", type=int, help="Random seed of the draw.")
@opt("select", "symprec", "--symprec", type=float, help="Symmetry tolerance for prototype labels, in Å.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable/unlabellable structures with a warning.")
@opt("select", "files.paths", "--files", "file_paths", multiple=True, type=click.Path(),
              help="Folder (or file) of CIF/POSCAR structures for the files source; repeatable.")
@click.option("--api-key", help="Materials Project API key (32 characters). [default: $MP_API_KEY]")
@click.option("--endpoint", help="Materials Project REST endpoint. [default: $MP_API_ENDPOINT or the public API]")
@click.option("--elements", help="mp: only materials containing all of these, comma-separated (e.g. Si,O).")
@click.option("--exclude-elements", help="mp: drop materials containing any of these, comma-separated.")
@opt("select", "mp.num_sites", "--num-sites", help="mp: sites in the MP cell as MIN,MAX (either may be empty).")
@opt("select", "mp.energy_above_hull_max", "--e-above-hull-max", type=float, help="mp: energy above hull maximum in eV/atom.")
@click.option("--stable-only", is_flag=True, default=None, help="mp: only materials on the convex hull.")
@click.option("--experimental-only", is_flag=True, default=None, help="mp: only materials with an ICSD entry.")
@click.option("--include-gnome", is_flag=True, default=None, help="mp: include GNoME-predicted materials.")
@click.option("--max-results", type=int, help="mp: stop after this many documents.")
@opt("select", "mp.timeout_s", "--timeout", type=float,
     help="mp: seconds to wait for the endpoint to connect and to answer each request (3 tries, then an error).")
@click.pass_context
def select_cmd(ctx: click.Context, config_path, sources, out, overwrite, dry_run, per_prototype, max_crystals, seed,
               symprec, skip_bad, file_paths, api_key, endpoint, elements, exclude_elements, num_sites,
               e_above_hull_max, stable_only, experimental_only, include_gnome, max_results, timeout) -> None:
    """Build a crystal catalogue grouped by AFLOW prototype, √N-sampled per group.

    Writes OUT/catalogue.json (structures as CIF text, prototype labels, space groups,
    lattice parameters in Å and degrees, provenance) and prints a summary table.
    """
    from ..api import select
    from ..catalog import drawn_by_source, summary_table
    from ..catalog.catalogue import FILENAME
    from ..settings import SelectSettings

    cfg = load_explicit("select", config_path, {
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
    mp_only = {"--api-key": api_key, "--endpoint": endpoint, "--elements": elements,
               "--exclude-elements": exclude_elements, "--num-sites": num_sites, "--e-above-hull-max": e_above_hull_max,
               "--stable-only": stable_only, "--experimental-only": experimental_only,
               "--include-gnome": include_gnome, "--max-results": max_results, "--timeout": timeout}
    given = [name for name, value in mp_only.items() if value is not None]
    if given and "mp" not in cfg["sources"]:
        # a filter of a source this run does not use would select as if it were not there
        raise FourdError(f"{', '.join(given)}: {'options' if len(given) > 1 else 'an option'} of the mp source, "
                         f"which this run does not use (sources: {', '.join(cfg['sources'])}); add --source mp")
    from pathlib import Path

    catalogue = select(SelectSettings(**cfg), api_key=api_key, overwrite=overwrite, dry_run=dry_run,
                       quiet=ctx.obj["quiet"])
    click.echo(summary_table(catalogue.groups, drawn_by_source(catalogue)))
    if dry_run:
        click.echo("dry run: nothing written")
        return
    click.echo(f"wrote {len(catalogue.crystals)} crystals to {Path(cfg['out']) / FILENAME}")
