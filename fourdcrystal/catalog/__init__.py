"""`fourdcrystal select`: build a crystal catalogue grouped by prototype and √N-sampled."""

from __future__ import annotations

import logging
import warnings
from collections import Counter, defaultdict
from typing import Any

from pymatgen.io.cif import CifWriter

from ..errors import FourdError
from ..progress import progress
from ..versions import software_versions
from .catalogue import Catalogue, read_catalogue, summary_table, write_catalogue
from .prototypes import LabelError, PrototypeInfo, label_structure
from .sampling import draw_count, sample_groups
from .sources import RawEntry, load_aflow, load_files, query_materials_project

__all__ = ["Catalogue", "build_catalogue", "read_catalogue", "write_catalogue", "summary_table",
           "sample_groups", "draw_count", "label_structure", "drawn_by_source"]

log = logging.getLogger("fourdcrystal")


def _crystal_record(raw: RawEntry, info: PrototypeInfo) -> dict[str, Any]:
    conv = info.conventional
    lat = conv.lattice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cif = str(CifWriter(conv))
    rec = {
        "id": raw.id,
        "source": raw.source,
        "source_id": raw.source_id,
        "formula": conv.composition.reduced_formula,
        "prototype": info.prototype,
        "prototype_canonical": info.canonical,
        "aflow_tag": info.aflow_tag,
        "space_group_number": info.space_group_number,
        "space_group_symbol": info.space_group_symbol,
        "pearson_symbol": info.pearson_symbol,
        "crystal_system": info.crystal_system,
        "num_sites": len(conv),
        "num_sites_source": len(raw.structure),
        "lattice": {"a_A": round(lat.a, 6), "b_A": round(lat.b, 6), "c_A": round(lat.c, 6),
                    "alpha_deg": round(lat.alpha, 6), "beta_deg": round(lat.beta, 6),
                    "gamma_deg": round(lat.gamma, 6)},
        "cell": "conventional standard (spglib)",
        "cif": cif,
    }
    rec.update(raw.extra)
    return rec


def collect_entries(cfg: dict, api_key: str | None = None, quiet: bool = False) -> list[RawEntry]:
    """Gather raw structures from every configured source; ids must be unique."""
    entries: list[RawEntry] = []
    for source in cfg["sources"]:
        if source == "aflow":
            entries += load_aflow()
        elif source == "mp":
            entries += query_materials_project(cfg["mp"], api_key=api_key, quiet=quiet)
        elif source == "files":
            entries += load_files(cfg["files"]["paths"], skip_bad=cfg["skip_bad"])
        elif source == "decorated":
            from .decorate import load_decorated

            d = cfg["decorated"]
            entries += load_decorated(d["max_per_prototype"], d["radius_tol"], d["cross_tol"], seed=cfg["seed"])
    dup = [i for i, n in Counter(e.id for e in entries).items() if n > 1]
    if dup:
        raise FourdError(f"crystal id {dup[0]} comes from two sources; rename the file or drop a source")
    return entries


def build_catalogue(cfg: dict, api_key: str | None = None, quiet: bool = False) -> Catalogue:
    """Collect, label, group and sample crystals according to a ``select`` config."""
    entries = collect_entries(cfg, api_key=api_key, quiet=quiet)
    labelled: dict[str, tuple[RawEntry, PrototypeInfo]] = {}
    for raw in progress(entries, desc="labelling prototypes", unit="crystal"):
        try:
            info = label_structure(raw.structure, cfg["symprec"], aflow_tag=raw.aflow_tag)
        except LabelError as exc:
            msg = f"{raw.source} crystal {raw.source_id}: {exc}"
            if not cfg["skip_bad"]:
                raise FourdError(msg + " (set `skip_bad` to skip it)") from None
            log.warning("skipping: %s", msg)
            continue
        labelled[raw.id] = (raw, info)
    if not labelled:
        raise FourdError("no crystal could be labelled; nothing to catalogue")

    groups: dict[str, list[str]] = defaultdict(list)
    for cid, (_, info) in labelled.items():
        groups[info.prototype].append(cid)
    drawn = sample_groups(groups, cfg["per_prototype"], cfg["max_crystals"], cfg["seed"])
    group_table = {label: {"size": len(ids), "drawn": len(drawn.get(label, []))} for label, ids in groups.items()}
    chosen = [cid for label in sorted(drawn) for cid in drawn[label]]
    crystals = [_crystal_record(*labelled[cid]) for cid in chosen]

    filters: dict[str, Any] = {}
    if "mp" in cfg["sources"]:
        filters["mp"] = {k: v for k, v in cfg["mp"].items()}
    if "files" in cfg["sources"]:
        filters["files"] = cfg["files"]
    if "decorated" in cfg["sources"]:
        filters["decorated"] = cfg["decorated"]
    header = {
        "sources": list(cfg["sources"]),
        "filters": filters,
        "sampling": {"per_prototype": cfg["per_prototype"], "max_crystals": cfg["max_crystals"],
                     "seed": cfg["seed"], "replacement": False},
        "symprec_A": cfg["symprec"],
        "labelling": "spglib AFLOW-style label (pymatgen get_prototype_from_protostructure), "
                     "reported as the AFLOW library tag where the canonical labels agree",
        "software": software_versions(),
    }
    return Catalogue(header=header, groups=group_table, crystals=crystals)


def drawn_by_source(catalogue: Catalogue) -> dict[str, int]:
    return dict(Counter(c["source"] for c in catalogue.crystals))
