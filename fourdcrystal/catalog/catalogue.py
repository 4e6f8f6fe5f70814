"""The catalogue file: schema, writing (atomic), reading (validated), and the summary table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_directory, write_text_atomic
from ..errors import FourdError

SCHEMA = "fourdcrystal.catalogue/1"
FILENAME = "catalogue.json"
CRYSTAL_KEYS = ("id", "source", "source_id", "formula", "prototype", "space_group_number", "num_sites",
                "lattice", "cif")


@dataclass
class Catalogue:
    """A catalogue in memory: the header (provenance) and one dict per crystal."""

    header: dict[str, Any]
    groups: dict[str, dict[str, int]]  # label -> {"size": N, "drawn": k}
    crystals: list[dict[str, Any]]

    def to_json(self) -> str:
        doc = dict(self.header)
        doc.update({"schema": SCHEMA, "groups": self.groups, "num_crystals": len(self.crystals),
                    "crystals": self.crystals})
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_catalogue(catalogue: Catalogue, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``out_dir/catalogue.json``; the folder appears only when complete."""
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_text_atomic(tmp / FILENAME, catalogue.to_json())
    return Path(out_dir) / FILENAME


def read_catalogue(path: str | Path) -> Catalogue:
    """Read a catalogue folder (or its JSON file) and check its schema."""
    path = Path(path)
    file = path / FILENAME if path.is_dir() else path
    if not file.exists():
        raise FourdError(f"catalogue {path} not found (expected a folder holding {FILENAME}); run fourdcrystal select first")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FourdError(f"catalogue {file} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise FourdError(f"catalogue {file}: schema {doc.get('schema') if isinstance(doc, dict) else None!r}, "
                         f"expected {SCHEMA!r}")
    crystals = doc.get("crystals")
    if not isinstance(crystals, list) or not crystals:
        raise FourdError(f"catalogue {file} lists no crystals")
    for i, c in enumerate(crystals):
        missing = [k for k in CRYSTAL_KEYS if k not in c]
        if missing:
            raise FourdError(f"catalogue {file}: crystal #{i} lacks {', '.join(missing)}")
    header = {k: v for k, v in doc.items() if k not in ("schema", "groups", "num_crystals", "crystals")}
    return Catalogue(header=header, groups=doc.get("groups", {}), crystals=crystals)


def summary_table(groups: dict[str, dict[str, int]], by_source: dict[str, int], max_rows: int = 25) -> str:
    """A plain-text table: prototype groups, most drawn (then largest) first."""
    rows = sorted(groups.items(), key=lambda kv: (-kv[1]["drawn"], -kv[1]["size"], kv[0]))
    width = max([len("prototype")] + [len(k) for k, _ in rows[:max_rows]])
    lines = [f"{'prototype':<{width}}  {'size':>6}  {'drawn':>5}", f"{'-' * width}  {'-' * 6}  {'-' * 5}"]
    for label, g in rows[:max_rows]:
        lines.append(f"{label:<{width}}  {g['size']:>6}  {g['drawn']:>5}")
    if len(rows) > max_rows:
        rest = rows[max_rows:]
        lines.append(f"... {len(rest)} more groups: {sum(g['size'] for _, g in rest)} crystals, "
                     f"{sum(g['drawn'] for _, g in rest)} drawn")
    total_n = sum(g["size"] for g in groups.values())
    total_k = sum(g["drawn"] for g in groups.values())
    lines.append(f"{len(groups)} prototype groups, {total_n} crystals, {total_k} drawn"
                 + (" (" + ", ".join(f"{s}: {n}" for s, n in sorted(by_source.items())) + ")" if by_source else ""))
    return "\n".join(lines)
