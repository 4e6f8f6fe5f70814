"""Crystal sources: the embedded AFLOW prototype library, the Materials Project, local files.

Each source returns :class:`RawEntry` objects (a structure and where it came from); labelling
and sampling happen afterwards, the same way for every source.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Element, Structure

from ..errors import FourdError

log = logging.getLogger("fourdcrystal")

DEFAULT_MP_ENDPOINT = "https://api.materialsproject.org"
# Only what the catalogue needs: the structure and a few descriptors (not the 100+ summary fields).
MP_FIELDS = ["material_id", "formula_pretty", "structure", "nsites", "energy_above_hull", "theoretical", "is_stable"]


@dataclass
class RawEntry:
    id: str  # unique within the catalogue, file-name safe
    source: str  # aflow | mp | files
    source_id: str  # AFLOW tag, MP material id, or the file path
    structure: Structure
    aflow_tag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def safe_id(text: str) -> str:
    """Make ``text`` safe for file names and HDF5 attributes: [A-Za-z0-9_.-] only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# --- aflow ------------------------------------------------------------------------------


def load_aflow() -> list[RawEntry]:
    """The 288 AFLOW prototype structures that pymatgen ships, labelled by their AFLOW tag."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    out = []
    seen: dict[str, int] = {}
    for entry in AFLOW_PROTOTYPE_LIBRARY:
        tags = entry["tags"]
        extra = {k: tags[k] for k in ("mineral", "strukturbericht") if tags.get(k)}
        # A few tags occur twice in the library (different structures, same Wyckoff set):
        # the second gets a suffix and lands in the same prototype group.
        n = seen[tags["aflow"]] = seen.get(tags["aflow"], 0) + 1
        cid = f"aflow-{safe_id(tags['aflow'])}" + (f"-{n}" if n > 1 else "")
        out.append(RawEntry(cid, "aflow", tags["aflow"], entry["snl"].structure, aflow_tag=tags["aflow"], extra=extra))
    return out


# --- Materials Project ------------------------------------------------------------------


def check_elements(symbols: list[str], key: str) -> list[str]:
    for s in symbols:
        if not Element.is_valid_symbol(s):
            raise FourdError(f"unknown element symbol {s!r} in {key}; expected symbols like Si, O, Fe")
    return symbols


def resolve_api_key(api_key: str | None) -> str:
    """The MP key from ``api_key`` or ``MP_API_KEY``, checked for form (32 letters/digits)."""
    origin = "`api_key`"
    if not api_key:
        api_key, origin = os.environ.get("MP_API_KEY", ""), "MP_API_KEY"
    api_key = api_key.strip()
    if not api_key:
        raise FourdError("the mp source needs a Materials Project API key: set MP_API_KEY or pass `api_key` "
                         "(get one at https://materialsproject.org/api)")
    if len(api_key) != 32 or not api_key.isalnum():
        raise FourdError(f"malformed Materials Project API key in {origin}: expected 32 letters and digits, "
                         f"got {len(api_key)} characters")
    return api_key


def resolve_endpoint(endpoint: str | None) -> str:
    endpoint = endpoint or os.environ.get("MP_API_ENDPOINT") or DEFAULT_MP_ENDPOINT
    if not re.match(r"^https?://", endpoint):
        raise FourdError(f"bad Materials Project endpoint {endpoint!r}; expected an http:// or https:// URL")
    return endpoint.rstrip("/") + "/"


def mp_search_kwargs(cfg: dict) -> dict[str, Any]:
    """Translate the ``select.mp`` config into ``SummaryRester.search`` keyword arguments.

    ``deprecated=False`` is always sent: besides dropping superseded entries it guarantees a
    non-empty query, since mp-api routes a query with no filter at all to a bulk S3/delta
    download that bypasses the REST endpoint.
    """
    kw: dict[str, Any] = {"deprecated": False, "include_gnome": bool(cfg["include_gnome"])}
    if cfg["elements"]:
        kw["elements"] = check_elements(cfg["elements"], "mp.elements")
    if cfg["exclude_elements"]:
        kw["exclude_elements"] = check_elements(cfg["exclude_elements"], "mp.exclude_elements")
    if cfg["num_sites"] is not None:
        lo, hi = cfg["num_sites"]
        kw["num_sites"] = (lo if lo is not None else 1, hi if hi is not None else 100000)
    if cfg["energy_above_hull_max"] is not None:
        kw["energy_above_hull"] = (0.0, float(cfg["energy_above_hull_max"]))
    if cfg["stable_only"]:
        kw["is_stable"] = True
    if cfg["experimental_only"]:
        kw["theoretical"] = False
    overlap = set(cfg["elements"]) & set(cfg["exclude_elements"])
    if overlap:
        raise FourdError(f"mp.elements and mp.exclude_elements both name {', '.join(sorted(overlap))}; "
                         "no material can match")
    return kw


HEARTBEAT_TRIES = 3


def check_endpoint_answers(endpoint: str, timeout_s: float, tries: int = HEARTBEAT_TRIES) -> None:
    """GET ``endpoint``/heartbeat with connect and read timeouts, ``tries`` times with a doubling pause (0.5 s,
    1 s, …) between: an endpoint that accepts the connection and never answers is refused in bounded time.

    mp-api's own first request (its heartbeat) has no timeout and would wait forever.
    """
    import time

    import requests

    for attempt in range(tries):
        try:
            requests.get(endpoint + "heartbeat", timeout=(timeout_s, timeout_s))
            return  # any answer, even an error status: the endpoint is there (MPRester reports the status)
        except requests.exceptions.Timeout:
            if attempt == tries - 1:
                raise FourdError(f"the Materials Project endpoint {endpoint} did not answer within {timeout_s:g} s "
                                 f"({tries} tries); check the network or `mp.endpoint`, or raise `mp.timeout_s`") from None
        except requests.exceptions.RequestException as exc:
            raise FourdError(f"cannot reach the Materials Project endpoint {endpoint} "
                             f"({type(exc).__name__}); check the network or `mp.endpoint`") from None
        time.sleep(0.5 * 2**attempt)


def query_materials_project(cfg: dict, api_key: str | None = None, quiet: bool = False) -> list[RawEntry]:
    """Search the Materials Project summary endpoint with the ``select.mp`` filters."""
    import requests
    from mp_api.client import MPRester
    from mp_api.client.core import MPRestError

    key = resolve_api_key(api_key)
    endpoint = resolve_endpoint(cfg["endpoint"])
    kwargs = mp_search_kwargs(cfg)
    chunk = int(cfg["chunk_size"])
    max_results = cfg["max_results"]
    num_chunks = math.ceil(max_results / chunk) if max_results else None
    timeout_s = float(cfg.get("timeout_s", 30.0))
    check_endpoint_answers(endpoint, timeout_s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with MPRester(api_key=key, endpoint=endpoint, use_document_model=False, mute_progress_bars=quiet,
                          timeout=max(1, math.ceil(timeout_s))) as mpr:
                docs = mpr.materials.summary.search(fields=MP_FIELDS, chunk_size=chunk, num_chunks=num_chunks,
                                                    **kwargs)
    except requests.exceptions.RequestException as exc:
        raise FourdError(f"cannot reach the Materials Project endpoint {endpoint} "
                         f"({type(exc).__name__}); check the network or `mp.endpoint`") from None
    except MPRestError as exc:
        text = str(exc)
        m = re.search(r"status code (\d{3})", text)
        code = int(m.group(1)) if m else None
        if code in (401, 403):
            raise FourdError(f"the Materials Project endpoint {endpoint} rejected the API key (HTTP {code}); "
                             "check MP_API_KEY / `api_key`") from None
        if "timed out" in text:
            raise FourdError(f"the Materials Project endpoint {endpoint} timed out; try a smaller mp.chunk_size") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise FourdError(f"Materials Project query to {endpoint} failed: {first}") from None
    except ValueError as exc:  # malformed JSON from a misconfigured endpoint
        raise FourdError(f"the Materials Project endpoint {endpoint} sent an unreadable answer: {exc}") from None
    if max_results:
        docs = docs[:max_results]
    if not docs:
        shown = {k: v for k, v in kwargs.items() if k != "deprecated"}
        raise FourdError(f"the Materials Project filters matched no materials: {shown}")
    out = []
    for doc in docs:
        doc = dict(doc)
        mid = str(doc["material_id"])
        try:
            structure = doc["structure"]
            if not isinstance(structure, Structure):
                structure = Structure.from_dict(structure)
        except Exception as exc:
            raise FourdError(f"Materials Project document {mid} has an unreadable structure: {exc}") from None
        extra = {"energy_above_hull_eV_per_atom": doc.get("energy_above_hull"),
                 "theoretical": doc.get("theoretical"), "is_stable": doc.get("is_stable")}
        out.append(RawEntry(safe_id(mid), "mp", mid, structure,
                            extra={k: v for k, v in extra.items() if v is not None}))
    return out


# --- local files ------------------------------------------------------------------------

_SUFFIXES = (".cif", ".vasp", ".poscar")
_PREFIXES = ("POSCAR", "CONTCAR")


def _is_structure_file(p: Path) -> bool:
    return p.is_file() and (p.suffix.lower() in _SUFFIXES or p.name.upper().startswith(_PREFIXES))


def find_structure_files(paths: list[str]) -> list[Path]:
    """Expand folders to their CIF/POSCAR files (sorted), keep files as given."""
    if not paths:
        raise FourdError("the files source needs at least one folder: set `files.paths`")
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            here = sorted(q for q in p.rglob("*") if _is_structure_file(q))
            if not here:
                raise FourdError(f"no CIF or POSCAR files in folder {p} (looked for *.cif, *.vasp, POSCAR*, CONTCAR*)")
            found.extend(here)
        elif p.is_file():
            found.append(p)
        else:
            raise FourdError(f"structure path {p} does not exist")
    return found


def read_structure_file(path: Path) -> Structure:
    """Read one CIF/POSCAR file; raise :class:`FourdError` naming the file on any failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(path)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FourdError(f"cannot read structure file {path}: {msg}") from None
    if len(structure) == 0:
        raise FourdError(f"structure file {path} holds no atoms")
    if not structure.is_ordered:
        raise FourdError(f"structure file {path} has partial site occupancies; only ordered crystals are supported")
    check_species(structure, str(path))
    return structure


def check_species(structure: Structure, where: str) -> None:
    """Every species a real chemical element (POSCAR species such as ``Xq`` become pymatgen dummy species,
    which have no atomic potential: the simulation would fail deep inside abTEM)."""
    from pymatgen.core.periodic_table import Element

    bad = sorted({str(sp) for sp in structure.composition.elements if not isinstance(sp, Element)})
    if bad:
        raise FourdError(f"{where}: unknown element symbol{'s' if len(bad) > 1 else ''} {', '.join(bad)}; "
                         f"expected symbols of the periodic table (H … Og)")


def load_files(paths: list[str], skip_bad: bool = False) -> list[RawEntry]:
    out: list[RawEntry] = []
    used: set[str] = set()
    for path in find_structure_files(paths):
        try:
            structure = read_structure_file(path)
        except FourdError as exc:
            if not skip_bad:
                raise
            log.warning("skipping: %s", exc)
            continue
        stem = path.stem if path.suffix.lower() in _SUFFIXES else path.name
        cid, n = f"file-{safe_id(stem)}", 2
        while cid in used:  # same file name in two folders
            cid, n = f"file-{safe_id(stem)}-{n}", n + 1
        used.add(cid)
        out.append(RawEntry(cid, "files", str(path), structure))
    return out
