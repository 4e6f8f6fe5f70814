import json

import pytest
from pymatgen.core import Lattice, Structure

from .conftest import run_cli


@pytest.fixture
def structure_folder(tmp_path):
    d = tmp_path / "structures"
    d.mkdir()
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    si.to(filename=str(d / "Si.cif"))
    ge = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.658), ["Ge"], [[0, 0, 0]])
    ge.to(filename=str(d / "Ge.cif"))
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    sub = d / "salts"
    sub.mkdir()
    nacl.to(filename=str(sub / "POSCAR"), fmt="poscar")
    (d / "README.txt").write_text("not a structure")
    return d


def test_files_source(tmp_path, structure_folder):
    out = tmp_path / "cat"
    res = run_cli("-q", "select", "--source", "files", "--files", str(structure_folder), "--out", str(out),
                  "--per-prototype", "all")
    assert res.exit_code == 0, res.output
    crystals = {c["id"]: c for c in json.loads((out / "catalogue.json").read_text())["crystals"]}
    assert set(crystals) == {"file-Si", "file-Ge", "file-POSCAR"}
    assert crystals["file-Si"]["prototype"] == crystals["file-Ge"]["prototype"] == "A_cF8_227_a"
    assert crystals["file-POSCAR"]["prototype"] == "AB_cF8_225_a_b"
    assert crystals["file-Si"]["num_sites"] == 8 and crystals["file-Si"]["lattice"]["a_A"] == pytest.approx(5.431)


def test_unreadable_file_named_or_skipped(tmp_path, structure_folder):
    (structure_folder / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n")
    out = tmp_path / "cat"
    res = run_cli("select", "--source", "files", "--files", str(structure_folder), "--out", str(out))
    assert res.exit_code == 2
    assert "broken.cif" in res.stderr and res.stderr.strip().count("\n") == 0
    assert not out.exists()
    res = run_cli("select", "--source", "files", "--files", str(structure_folder), "--out", str(out), "--skip-bad")
    assert res.exit_code == 0
    assert "warning: skipping" in res.stderr and "broken.cif" in res.stderr
    assert json.loads((out / "catalogue.json").read_text())["num_crystals"] == 2  # Si+Ge -> 1, NaCl -> 1


def test_disordered_structure_rejected(tmp_path):
    d = tmp_path / "dis"
    d.mkdir()
    s = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    s.to(filename=str(d / "CuAu.cif"))
    res = run_cli("select", "--source", "files", "--files", str(d), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "partial site occupancies" in res.stderr and "CuAu.cif" in res.stderr


def test_missing_or_empty_folder(tmp_path):
    res = run_cli("select", "--files", str(tmp_path / "nope"), "--source", "files", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_cli("select", "--files", str(tmp_path / "empty"), "--source", "files", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no CIF or POSCAR files" in res.stderr
