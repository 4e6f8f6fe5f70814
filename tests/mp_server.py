"""A local stand-in for the Materials Project REST API, on 127.0.0.1, for tests.

It answers what ``mp_api.client.MPRester`` asks of the real service: ``GET /heartbeat``
(database and emmet versions) and ``GET /materials/summary/`` with the real query grammar
(``elements``, ``exclude_elements``, ``nsites_min/_max``, ``energy_above_hull_min/_max``,
``is_stable``, ``theoretical``, ``deprecated``, ``batch_id_not_eq``, ``_fields``,
``_all_fields``, ``_limit``, ``_skip``) and the real envelope
``{"data": [...], "meta": {"total_doc": N, ...}}``. Authentication mirrors the gateway: no
``x-api-key`` header -> 401, an unknown key -> 403. Unknown query parameters -> 400, so a
client-side typo cannot pass silently. Every request is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from pymatgen.core import Lattice, Structure

GOOD_KEY = "abcdefghijklmnopqrstuvwxyz012345"
assert len(GOOD_KEY) == 32

_BOOL = {"true": True, "false": False}
_KNOWN = {"elements", "exclude_elements", "nsites_min", "nsites_max", "energy_above_hull_min",
          "energy_above_hull_max", "is_stable", "theoretical", "deprecated", "batch_id_not_eq", "_fields",
          "_all_fields", "_limit", "_skip"}


def _doc(mid: str, structure: Structure, e_hull: float, theoretical: bool = False,
         batch_id: str = "mp_r2scan", deprecated: bool = False) -> dict:
    return {
        "material_id": mid,
        "formula_pretty": structure.composition.reduced_formula,
        "nsites": len(structure),
        "elements": sorted({el.symbol for el in structure.composition.elements}),
        "energy_above_hull": e_hull,
        "is_stable": e_hull == 0.0,
        "theoretical": theoretical,
        "deprecated": deprecated,
        "batch_id": batch_id,
        "band_gap": 1.0,
        "structure": structure.as_dict(),
    }


def default_documents() -> list[dict]:
    """Real crystal structures in several prototypes (primitive cells, as MP stores them)."""
    def fcc(a, sp):
        return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), sp, [[0, 0, 0]])

    def diamond(a, a1, a2):
        lat = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
        return Structure(lat, [a1, a2], [[0, 0, 0], [0.25, 0.25, 0.25]])

    def rocksalt(a, a1, a2):
        lat = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
        return Structure(lat, [a1, a2], [[0, 0, 0], [0.5, 0.5, 0.5]])

    hcp_mg = Structure(Lattice.hexagonal(3.209, 5.211), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    bcc_fe = Structure(Lattice.cubic(2.866), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return [
        _doc("mp-149", diamond(5.431, "Si", "Si"), 0.0),
        _doc("mp-32", diamond(5.658, "Ge", "Ge"), 0.0),
        _doc("mp-66", diamond(3.567, "C", "C"), 0.136),
        _doc("mp-2534", diamond(5.653, "Ga", "As"), 0.0),
        _doc("mp-10695", diamond(5.41, "Zn", "S"), 0.0),
        _doc("mp-22862", rocksalt(5.64, "Na", "Cl"), 0.0),
        _doc("mp-1265", rocksalt(4.212, "Mg", "O"), 0.0),
        _doc("mp-23193", rocksalt(6.29, "K", "Cl"), 0.0),
        _doc("mp-30", fcc(3.615, ["Cu"]), 0.0),
        _doc("mp-134", fcc(4.05, ["Al"]), 0.0),
        _doc("mp-13", bcc_fe, 0.0),
        _doc("mp-153", hcp_mg, 0.0),
        _doc("mp-5229", sto, 0.0),
        _doc("mp-1000001", diamond(5.6, "Si", "Ge"), 0.01, theoretical=True),
        _doc("mp-3000001", diamond(5.5, "Si", "C"), 0.02, theoretical=True, batch_id="gnome_r2scan_statics"),
        _doc("mp-9999999", diamond(5.431, "Si", "Si"), 0.0, deprecated=True),
    ]


class FakeMaterialsProject:
    """Run the fake service in a background thread: ``with FakeMaterialsProject() as mp: mp.url``."""

    def __init__(self, documents: list[dict] | None = None, valid_keys: tuple[str, ...] = (GOOD_KEY,)):
        self.documents = documents if documents is not None else default_documents()
        self.valid_keys = valid_keys
        self.requests: list[dict] = []  # {"path", "params", "headers"}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def summary_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].rstrip("/") == "/materials/summary"]

    def __enter__(self) -> "FakeMaterialsProject":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                fake.requests.append({"path": url.path, "params": params, "headers": dict(self.headers)})
                if url.path.rstrip("/") == "/heartbeat":
                    return self._send(200, {"status": "OK", "db_version": "2025_09_25",
                                            "access_controlled_batch_ids": [], "version": "0.87.3"})
                key = self.headers.get("x-api-key")
                if not key:
                    return self._send(401, {"message": "No API key found in request"})
                if key not in fake.valid_keys:
                    return self._send(403, {"detail": "Invalid authentication credentials"})
                if url.path.rstrip("/") != "/materials/summary":
                    return self._send(404, {"detail": "Not Found"})
                unknown = sorted(set(params) - _KNOWN)
                if unknown:
                    return self._send(400, {"detail": f"unknown query parameters: {unknown}"})
                docs = [d for d in fake.documents if _matches(d, params)]
                skip, limit = int(params.get("_skip", 0)), int(params.get("_limit", 100))
                page = docs[skip:skip + limit]
                if "_fields" in params:
                    fields = params["_fields"].split(",")
                    page = [{k: d[k] for k in fields if k in d} for d in page]
                return self._send(200, {"data": page, "meta": {"total_doc": len(docs), "max_limit": 1000,
                                                               "api_version": "0.87.3"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _matches(doc: dict, p: dict) -> bool:
    if "elements" in p and not set(p["elements"].split(",")) <= set(doc["elements"]):
        return False
    if "exclude_elements" in p and set(p["exclude_elements"].split(",")) & set(doc["elements"]):
        return False
    for name, key in (("nsites", "nsites"), ("energy_above_hull", "energy_above_hull")):
        if f"{name}_min" in p and doc[key] < float(p[f"{name}_min"]):
            return False
        if f"{name}_max" in p and doc[key] > float(p[f"{name}_max"]):
            return False
    for flag in ("is_stable", "theoretical", "deprecated"):
        if flag in p and doc[flag] != _BOOL[p[flag].lower()]:
            return False
    if "batch_id_not_eq" in p and doc["batch_id"] == p["batch_id_not_eq"]:
        return False
    return True
