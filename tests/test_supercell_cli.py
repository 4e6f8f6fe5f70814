"""`fourdcrystal supercell` end to end: manifest, exact rebuild, preview, errors."""

import csv
import json
import math

import numpy as np
import pytest

from fourdcrystal.specimens.supercell import COLUMNS, load_specimen, read_specimens

from .conftest import run_cli


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("sc") / "cat"
    assert run_cli("-q", "select", "--max-crystals", "8", "--out", str(out)).exit_code == 0
    return out


@pytest.fixture(scope="module")
def specimens(catalogue):
    out = catalogue.parent / "spec"
    res = run_cli("-q", "supercell", str(catalogue), "--out", str(out), "--zone-axes", "2", "--thickness", "40,80")
    assert res.exit_code == 0, res.output
    assert "16 specimens from 8 crystals" in res.output
    return out


def test_manifest_files(specimens):
    with open(specimens / "specimens.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS and len(rows) == 16
    header = json.loads((specimens / "manifest.json").read_text())
    assert header["counts"]["specimens"] == 16 and len(header["catalogue_sha256"]) == 64
    assert header["config"]["thicknesses_A"] == [40.0, 80.0]
    for r in rows:
        assert r["thicknesses_A"] == "40.0;80.0"
        assert math.hypot(float(r["tilt_x_mrad"]), float(r["tilt_y_mrad"])) <= 10.0
        assert r["mode"] in ("periodic", "cut") and (r["cell_matrix"] != "") == (r["mode"] == "periodic")
        assert float(r["strain"]) <= 0.005


def test_rows_rebuild_identically_with_axis_along_beam(specimens):
    spec = read_specimens(specimens)
    for row in spec.rows:
        a = load_specimen(spec, row.specimen_id)
        b = load_specimen(read_specimens(specimens), row.specimen_id)
        assert np.array_equal(a.atoms.positions, b.atoms.positions) and np.array_equal(a.atoms.numbers, b.atoms.numbers)
        from pymatgen.core import Structure

        lat = Structure.from_str(spec.crystals[row.crystal_id]["cif"], fmt="cif").lattice.matrix
        t = np.asarray(row.zone_axis, float) @ lat @ a.rotation.T
        assert math.atan2(math.hypot(t[0], t[1]), t[2]) < 1e-6  # beam-mode tilt: the axis stays on +z
        assert a.atoms.cell[2, 2] == pytest.approx(80.0)


def test_same_seed_same_bytes(catalogue, specimens, tmp_path):
    again = tmp_path / "again"
    assert run_cli("-q", "supercell", str(catalogue), "--out", str(again), "--zone-axes", "2",
                   "--thickness", "40,80").exit_code == 0
    assert (again / "specimens.csv").read_bytes() == (specimens / "specimens.csv").read_bytes()
    other = tmp_path / "other"
    assert run_cli("-q", "supercell", str(catalogue), "--out", str(other), "--zone-axes", "2",
                   "--thickness", "40,80", "--seed", "9").exit_code == 0
    assert (other / "specimens.csv").read_bytes() != (specimens / "specimens.csv").read_bytes()


def test_preview_png(specimens, drawn):
    """The preview draws the specimen seen down the beam: every projected atom column once, coloured by element
    (legend by symbol), the box outline in Å and, for a cut box, the probe at its centre."""
    sid = read_specimens(specimens).rows[0].specimen_id
    res = run_cli("-q", "supercell", "--out", str(specimens), "--preview", sid)
    assert res.exit_code == 0, res.output
    png = specimens / f"preview-{sid}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = drawn[png.name].axes[0]
    sp = load_specimen(read_specimens(specimens), sid)
    xy, z = sp.atoms.positions[:, :2], sp.atoms.numbers
    columns = {(round(float(x), 2), round(float(y), 2), int(n)) for (x, y), n in zip(xy, z)}
    from ase.data import chemical_symbols

    points = {}
    for coll in ax.collections:
        points[coll.get_label()] = np.asarray(coll.get_offsets())
    assert set(points) == {chemical_symbols[n] for n in set(z.tolist())}
    drawn_columns = {(round(float(x), 2), round(float(y), 2), int(chemical_symbols.index(sym)))
                     for sym, pts in points.items() for x, y in pts}
    assert drawn_columns == columns and sum(len(p) for p in points.values()) == len(columns)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    lx, ly = sp.plan.box_A
    assert max(lines["box"].get_xdata()) == pytest.approx(lx) and max(lines["box"].get_ydata()) == pytest.approx(ly)
    if sp.plan.mode == "periodic":
        assert max(lines["periodic cell"].get_xdata()) == pytest.approx(sp.plan.cell_A[0])
    else:
        probe = lines["probe (cut box: keep centred)"]
        assert (probe.get_xdata()[0], probe.get_ydata()[0]) == pytest.approx((lx / 2, ly / 2))
    assert ax.get_xlabel() == "x (Å)" and ax.get_ylabel() == "y (Å)" and sid in png.name
    res = run_cli("supercell", "--out", str(specimens), "--preview", "nope")
    assert res.exit_code == 2 and "no specimen 'nope'" in res.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--tilt-max", "60"], "bad value for --tilt-max (tilt_mrad_max): 60.0; expected a number >= 0.0 and <= 50.0"),
    (["--lateral-size", "2"], "cannot hold one unit cell"),
    (["--thickness", "0,10"], "bad value for --thickness (thicknesses_A)"),
])
def test_errors(catalogue, tmp_path, args, fragment):
    out = tmp_path / "o"
    res = run_cli("supercell", str(catalogue), "--out", str(out), *args)
    assert res.exit_code == 2, res.output
    assert fragment in res.stderr and res.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_missing_catalogue(tmp_path):
    res = run_cli("supercell", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not found" in res.stderr and "fourdcrystal select" in res.stderr
    res = run_cli("supercell", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "give a CATALOGUE" in res.stderr


def test_applied_strain_drawn_fixed_and_absent(catalogue, specimens, tmp_path):
    """--strain-pct S draws each component in ±S %; a fixed tensor is copied; 0 leaves the manifest as before
    (the draw consumes no random numbers) and every row rebuilds with its strain."""
    drawn = tmp_path / "drawn"
    res = run_cli("-q", "supercell", str(catalogue), "--out", str(drawn), "--zone-axes", "2", "--thickness", "40,80",
                  "--strain-pct", "1.5")
    assert res.exit_code == 0, res.output
    spec, plain = read_specimens(drawn), read_specimens(specimens)
    strains = np.array([r.applied_strain for r in spec.rows])
    assert np.all(np.abs(strains) <= 0.015) and np.all(np.abs(strains).max(axis=0) > 0.003)
    for a, b in zip(spec.rows, plain.rows):  # same geometry draws as without strain
        assert (a.specimen_id, a.phi_deg, a.tilt_mrad, a.seed) == (b.specimen_id, b.phi_deg, b.tilt_mrad, b.seed)
    row = spec.rows[0]
    sp = load_specimen(spec, row.specimen_id)
    assert sp.info["applied_strain"] == row.applied_strain
    assert sp.plan.mode == "cut" if row.applied_strain[2] else sp.plan.mode == row.plan.mode
    fixed = tmp_path / "fixed"
    res = run_cli("-q", "supercell", str(catalogue), "--out", str(fixed), "--zone-axes", "1", "--thickness", "40",
                  "--strain-pct", "1,-0.5,0", "--max-index", "1")
    assert res.exit_code == 0, res.output
    rows = read_specimens(fixed).rows
    assert all(r.applied_strain == (0.01, -0.005, 0.0) for r in rows)
    sp = load_specimen(read_specimens(fixed), rows[0].specimen_id)
    assert sp.plan.mode == rows[0].plan.mode  # normal strain keeps a periodic cell periodic, stretched
    np.testing.assert_allclose(sp.plan.box_A, np.array(rows[0].plan.box_A) * [1.01, 0.995])
    with open(specimens / "specimens.csv", newline="") as fh:
        assert all(r["strain_xx"] == r["strain_yy"] == r["strain_xy"] == "0.0" for r in csv.DictReader(fh))


@pytest.mark.parametrize("value,message", [("25", "0 <= s <= 20"), ("30,0,0", "within ±20 %"), ("1,2", "one number S or three"),
                                           ("nan", "0 <= s <= 20"), ("-1", "0 <= s <= 20")])
def test_bad_strain_pct(catalogue, tmp_path, value, message):
    res = run_cli("supercell", str(catalogue), "--out", str(tmp_path / "x"), "--strain-pct", value)
    assert res.exit_code == 2 and message in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "x").exists()
