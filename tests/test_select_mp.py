"""The mp source through the real mp_api MPRester, against a local service on 127.0.0.1."""

import json
import socket

import pytest

from fourdcrystal.catalog.sources import MP_FIELDS

from .conftest import run_cli
from .mp_server import GOOD_KEY, FakeMaterialsProject


@pytest.fixture
def mp():
    with FakeMaterialsProject() as server:
        yield server


def _select(mp, tmp_path, *extra, key=GOOD_KEY):
    args = ["-q", "select", "--source", "mp", "--endpoint", mp.url, "--out", str(tmp_path / "cat"),
            "--per-prototype", "all", *extra]
    if key is not None:
        args += ["--api-key", key]
    return run_cli(*args)


def _ids(tmp_path):
    return sorted(c["source_id"] for c in json.loads((tmp_path / "cat" / "catalogue.json").read_text())["crystals"])


def test_query_parameters_fields_and_gnome(mp, tmp_path):
    res = _select(mp, tmp_path)
    assert res.exit_code == 0, res.output
    assert [r["path"] for r in mp.requests if r["path"] == "/heartbeat"]  # the client's construction check
    reqs = mp.summary_requests()
    assert len(reqs) == 1
    p = reqs[0]["params"]
    assert reqs[0]["headers"].get("x-api-key") == GOOD_KEY
    assert p["batch_id_not_eq"] == "gnome_r2scan_statics"  # GNoME excluded unless asked
    assert p["deprecated"].lower() == "false"
    assert set(p["_fields"].split(",")) == set(MP_FIELDS)  # only what is needed, never _all_fields
    assert "_all_fields" not in p
    assert float(p["energy_above_hull_max"]) == 0.05 and (p["nsites_min"], p["nsites_max"]) == ("1", "64")
    ids = _ids(tmp_path)
    assert "mp-3000001" not in ids and "mp-9999999" not in ids and "mp-66" not in ids  # gnome, deprecated, e_hull
    assert "mp-149" in ids and "mp-1000001" in ids


def test_paging_in_chunks(mp, tmp_path, monkeypatch):
    res = run_cli("-q", "select", "--source", "mp", "--endpoint", mp.url, "--api-key", GOOD_KEY,
                  "--out", str(tmp_path / "cat"), "--per-prototype", "all", "--config", str(_chunk_config(tmp_path, 4)))
    assert res.exit_code == 0, res.output
    reqs = mp.summary_requests()
    skips = [int(r["params"].get("_skip", 0)) for r in reqs]
    limits = [int(r["params"]["_limit"]) for r in reqs]
    assert skips == [0, 4, 8, 12] and limits == [4, 4, 4, 1]  # 13 matching documents
    assert len(_ids(tmp_path)) == 13


def _chunk_config(tmp_path, n):
    path = tmp_path / "chunk.yaml"
    path.write_text(f"select:\n  mp:\n    chunk_size: {n}\n")
    return path


def test_filters_are_sent_and_applied(mp, tmp_path):
    res = _select(mp, tmp_path, "--elements", "Si", "--exclude-elements", "O", "--experimental-only", "--stable-only",
                  "--num-sites", "2,8", "--e-above-hull-max", "0.2", "--include-gnome")
    assert res.exit_code == 0, res.output
    p = mp.summary_requests()[0]["params"]
    assert p["elements"] == "Si" and p["exclude_elements"] == "O"
    assert p["theoretical"].lower() == "false" and p["is_stable"].lower() == "true"
    assert (p["nsites_min"], p["nsites_max"]) == ("2", "8") and float(p["energy_above_hull_max"]) == 0.2
    assert "batch_id_not_eq" not in p
    assert _ids(tmp_path) == ["mp-149"]


def test_sqrt_grouping_of_mp_structures(mp, tmp_path):
    res = run_cli("-q", "select", "--source", "mp", "--endpoint", mp.url, "--api-key", GOOD_KEY,
                  "--out", str(tmp_path / "cat"))
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "cat" / "catalogue.json").read_text())
    groups = doc["groups"]
    # independent expectation: diamond {Si, Ge}; zinc blende {GaAs, ZnS, SiGe}; rock salt {NaCl, MgO, KCl};
    # fcc {Cu, Al}; bcc Fe; hcp Mg; cubic perovskite SrTiO3 -- as AFLOW library tags
    assert groups["A_cF8_227_a"] == {"size": 2, "drawn": 1}
    assert groups["AB_cF8_225_a_b"] == {"size": 3, "drawn": 2}
    assert groups["A_cF4_225_a"] == {"size": 2, "drawn": 1}
    assert groups["A_cI2_229_a"] == {"size": 1, "drawn": 1}
    assert groups["A_hP2_194_c"] == {"size": 1, "drawn": 1}
    zb = [k for k in groups if "_cF8_216_" in k]
    assert len(zb) == 1 and groups[zb[0]] == {"size": 3, "drawn": 2}
    assert sum(g["size"] for g in groups.values()) == 13
    si = [c for c in doc["crystals"] if c["prototype"] == "A_cF8_227_a"][0]
    assert si["num_sites"] == 8 and si["num_sites_source"] == 2  # conventional cell stored
    assert doc["filters"]["mp"]["include_gnome"] is False


def test_combined_with_aflow_joins_groups(mp, tmp_path):
    res = run_cli("-q", "select", "--source", "aflow", "--source", "mp", "--endpoint", mp.url, "--api-key", GOOD_KEY,
                  "--out", str(tmp_path / "cat"), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "301 crystals" in res.output  # 288 + 13
    assert "(aflow: " in res.output and "mp: " in res.output


@pytest.mark.parametrize("key, fragment", [
    (None, "needs a Materials Project API key"),
    ("short", "malformed Materials Project API key in --api-key: expected 32 letters and digits, got 5"),
    ("z" * 32, "rejected the API key (HTTP 403)"),
])
def test_key_errors(mp, tmp_path, key, fragment):
    res = _select(mp, tmp_path, key=key)
    assert res.exit_code == 2
    assert fragment in res.stderr and res.stderr.strip().count("\n") == 0
    assert not (tmp_path / "cat").exists()


def test_key_from_environment(mp, tmp_path, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", GOOD_KEY)
    monkeypatch.setenv("MP_API_ENDPOINT", mp.url)
    res = run_cli("-q", "select", "--source", "mp", "--out", str(tmp_path / "cat"))
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("MP_API_KEY", "x" * 31)
    res = run_cli("-q", "select", "--source", "mp", "--out", str(tmp_path / "cat2"))
    assert res.exit_code == 2 and "in MP_API_KEY" in res.stderr


def test_unreachable_endpoint(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli("select", "--source", "mp", "--endpoint", f"http://127.0.0.1:{port}", "--api-key", GOOD_KEY,
                  "--out", str(tmp_path / "cat"))
    assert res.exit_code == 2
    assert f"cannot reach the Materials Project endpoint http://127.0.0.1:{port}/" in res.stderr
    assert not (tmp_path / "cat").exists()


def test_nothing_matches_and_unknown_element(mp, tmp_path):
    res = _select(mp, tmp_path, "--elements", "Xe")
    assert res.exit_code == 2 and "matched no materials" in res.stderr and "Xe" in res.stderr
    res = _select(mp, tmp_path, "--elements", "Qq")
    assert res.exit_code == 2 and "unknown element symbol 'Qq' in mp.elements" in res.stderr
    assert not mp.summary_requests()[1:]  # the bad symbol never reached the service
    assert not (tmp_path / "cat").exists()


def test_an_endpoint_that_never_answers_is_refused_in_bounded_time(tmp_path):
    """A server that accepts the connection and never answers: select ends with one line after its 3 tries of
    --timeout seconds, instead of waiting forever (run in a subprocess with a hard limit, so a hang fails)."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshakes; nobody ever reads or answers
        port = s.getsockname()[1]
        try:
            res = subprocess.run([sys.executable, "-m", "fourdcrystal", "-q", "select", "--source", "mp",
                                  "--endpoint", f"http://127.0.0.1:{port}", "--api-key", GOOD_KEY, "--timeout", "0.5",
                                  "--out", str(tmp_path / "cat")], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("select waited on an endpoint that never answers")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"error: the Materials Project endpoint http://127.0.0.1:{port}/ did not answer "
                                  f"within 0.5 s (3 tries); check the network or --endpoint, or raise --timeout")
    assert not (tmp_path / "cat").exists()
