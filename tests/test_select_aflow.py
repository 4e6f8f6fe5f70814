"""The embedded default end to end through the CLI, checked against independent symmetry analysis."""

import json
import math
import subprocess
import sys
import warnings
from collections import Counter

import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from .conftest import run_cli


@pytest.fixture(scope="module")
def aflow_catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("cat") / "catalogue"
    res = run_cli("-q", "select", "--out", str(out))
    assert res.exit_code == 0, res.output
    return out, res, json.loads((out / "catalogue.json").read_text())


def test_catalogue_content(aflow_catalogue):
    out, res, doc = aflow_catalogue
    assert doc["schema"] == "fourdcrystal.catalogue/1"
    assert doc["sources"] == ["aflow"] and doc["sampling"]["seed"] == 0
    assert doc["software"]["pymatgen"] and doc["software"]["fourdcrystal"]
    groups = doc["groups"]
    assert sum(g["size"] for g in groups.values()) == 288  # the whole library is grouped
    for g in groups.values():
        assert g["drawn"] == max(1, round(math.sqrt(g["size"])))
    crystals = doc["crystals"]
    assert len(crystals) == sum(g["drawn"] for g in groups.values()) == doc["num_crystals"]
    assert len({c["id"] for c in crystals}) == len(crystals)
    assert Counter(c["prototype"] for c in crystals) == Counter({k: g["drawn"] for k, g in groups.items()})
    assert "prototype groups" in res.output and "wrote" in res.output


def test_records_agree_with_independent_symmetry(aflow_catalogue):
    _, _, doc = aflow_catalogue
    by_tag = {c["aflow_tag"]: c for c in doc["crystals"]}
    diamond = by_tag["A_cF8_227_a"]
    assert diamond["space_group_number"] == 227 and diamond["pearson_symbol"] == "cF8"
    assert by_tag["AB_cF8_225_a_b"]["space_group_number"] == 225  # rock salt
    systems = Counter()
    for c in doc["crystals"][::7]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(c["cif"], fmt="cif")
        assert len(s) == c["num_sites"]
        assert s.composition.reduced_formula == c["formula"]
        lat = c["lattice"]
        assert math.isclose(s.lattice.a, lat["a_A"], rel_tol=1e-5) and math.isclose(s.lattice.gamma, lat["gamma_deg"], rel_tol=1e-5)
        sga = SpacegroupAnalyzer(s, symprec=0.1)
        assert sga.get_space_group_number() == c["space_group_number"], c["id"]
        # the label's Pearson symbol and space group are those of the structure
        pearson, spg = c["prototype_canonical"].split("_")[1:3]
        assert int(spg) == c["space_group_number"]
        systems[c["crystal_system"]] += 1
    assert len(systems) >= 6  # the library spans (nearly) every crystal system


def test_same_seed_same_bytes_other_seed_differs(tmp_path, aflow_catalogue):
    out, _, _ = aflow_catalogue
    again = tmp_path / "again"
    assert run_cli("-q", "select", "--out", str(again)).exit_code == 0
    assert (again / "catalogue.json").read_bytes() == (out / "catalogue.json").read_bytes()
    other = tmp_path / "other"
    assert run_cli("-q", "select", "--out", str(other), "--seed", "1").exit_code == 0
    ids = lambda p: [c["id"] for c in json.loads((p / "catalogue.json").read_text())["crystals"]]
    assert ids(other) != ids(out)


def test_quickstart_config_caps_and_keeps_prototypes(tmp_path, configs_dir):
    out = tmp_path / "qs"
    res = run_cli("-q", "select", "--config", str(configs_dir / "quickstart.yaml"), "--out", str(out))
    assert res.exit_code == 0, res.output
    crystals = json.loads((out / "catalogue.json").read_text())["crystals"]
    assert len(crystals) == 24
    assert len({c["prototype"] for c in crystals}) == 24


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "dry"
    res = run_cli("-q", "select", "--out", str(out), "--dry-run", "--per-prototype", "all")
    assert res.exit_code == 0
    assert "288 crystals, 288 drawn" in res.output and "dry run" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "cat"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    res = run_cli("-q", "select", "--out", str(out), "--max-crystals", "3")
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "already exists" in res.stderr and "--overwrite" in res.stderr
    assert (out / "keep.txt").exists()
    res = run_cli("-q", "select", "--out", str(out), "--max-crystals", "3", "--overwrite")
    assert res.exit_code == 0
    assert not (out / "keep.txt").exists() and (out / "catalogue.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]  # no temporary folders left


def test_bad_option_value_is_one_line(tmp_path):
    res = run_cli("select", "--out", str(tmp_path / "x"), "--per-prototype", "many")
    assert res.exit_code == 2
    assert res.stderr.startswith("error: command line: bad value for --per-prototype (per_prototype): 'many'")
    assert not (tmp_path / "x").exists()


def test_console_script_version_and_help():
    exe = [sys.executable, "-m", "fourdcrystal.cli"]
    out = subprocess.run(exe + ["--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("fourdcrystal, version ")
    helptext = subprocess.run(exe + ["select", "--help"], capture_output=True, text=True, check=True).stdout
    assert "eV/atom" in helptext and "√N" in helptext
