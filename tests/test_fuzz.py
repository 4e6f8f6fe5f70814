"""Readers and the config schema never trust a file: random bytes, truncations and wrong types give one
FourdError (the CLI's one line), never another exception. Property tests with hypothesis."""

from __future__ import annotations

import functools
import os
import json
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourdcrystal.config import SCHEMAS, load_config
from fourdcrystal.errors import FourdError

from .formats import write_mib

# the same examples on every run (CI is not a lottery); FUZZ_RANDOM=1 draws new ones, FUZZ_EXAMPLES=1000 more of them
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")), deadline=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# YAML-able values of every type the schema might meet
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(allow_nan=True),
                     st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                       max_leaves=12)


def _refused_or_read(call) -> None:
    try:
        call()
    except FourdError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), str(exc)


def _keys(schema, prefix=""):
    for k, v in schema.items():
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


@FUZZ
@given(section=st.sampled_from(sorted(SCHEMAS)), data=st.data())
def test_config_values_of_any_type_are_read_or_refused_in_one_line(tmp_path, section, data):
    keys = list(_keys(SCHEMAS[section]))
    key = data.draw(st.sampled_from(keys))
    value = data.draw(_values)
    doc: dict = {}
    node = doc.setdefault(section, {})
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _refused_or_read(lambda: load_config(section, path))


@FUZZ
@given(section=st.sampled_from(sorted(SCHEMAS)), blob=st.binary(max_size=400))
def test_config_files_of_random_bytes_are_refused_in_one_line(tmp_path, section, blob):
    path = tmp_path / "c.yaml"
    path.write_bytes(blob)
    _refused_or_read(lambda: load_config(section, path))


@functools.cache
def _good_files() -> dict[str, bytes]:
    """Valid files of each reader, to be cut and damaged (a cache, not a fixture: hypothesis would print it)."""
    import tempfile

    import h5py

    base = Path(tempfile.mkdtemp(prefix="fuzz-good-"))
    scan = np.random.default_rng(0).poisson(5.0, (2, 3, 16, 16)).astype(np.uint16)
    np.save(base / "scan.npy", scan)
    write_mib(base / "scan.mib", scan)
    with h5py.File(base / "scan.h5", "w") as f:
        f["data"] = scan
        f["data"].attrs["k_pixel_invA"] = 0.05
    files = {name: (base / name).read_bytes() for name in ("scan.npy", "scan.mib", "scan.h5")}
    files["scan.hdr"] = (base / "scan.hdr").read_bytes() if (base / "scan.hdr").exists() else b""
    return files


@FUZZ
@given(name=st.sampled_from(["scan.npy", "scan.mib", "scan.h5"]), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6))
def test_4d_readers_refuse_cut_or_damaged_files_in_one_line(tmp_path, name, cut, flips):
    from fourdcrystal.io.readers import open_4d

    good_files = _good_files()

    data = bytearray(good_files[name][: max(0, int(len(good_files[name]) * cut))])
    for where, byte in flips:
        if data:
            data[min(len(data) - 1, int(where * len(data)))] = byte
    path = tmp_path / name
    path.write_bytes(bytes(data))
    if name == "scan.mib" and good_files["scan.hdr"]:
        (tmp_path / "scan.hdr").write_bytes(good_files["scan.hdr"])

    def read():
        with open_4d(path) as scan:
            if len(scan):
                np.asarray(scan.read(0, min(len(scan), 6)))  # the frames themselves, not only the header

    _refused_or_read(read)


@FUZZ
@given(name=st.sampled_from(["x.npy", "x.mib", "x.h5", "x.emd", "x.hdf5"]), blob=st.binary(max_size=2048))
def test_4d_readers_refuse_random_bytes_in_one_line(tmp_path, name, blob):
    from fourdcrystal.io.readers import open_4d

    path = tmp_path / name
    path.write_bytes(blob)

    def read():
        with open_4d(path):
            pass

    _refused_or_read(read)


@FUZZ
@given(blob=st.one_of(st.binary(max_size=600), _values.map(lambda v: json.dumps(v).encode())))
def test_json_readers_refuse_what_they_cannot_use_in_one_line(tmp_path, blob):
    """Catalogue, model card, specimens manifest and data-set index: random bytes or JSON of any shape."""
    from fourdcrystal.catalog.catalogue import read_catalogue
    from fourdcrystal.specimens.supercell import read_specimens
    from fourdcrystal.model.card import read_card
    from fourdcrystal.training.data import open_dataset

    (tmp_path / "catalogue.json").write_bytes(blob)
    _refused_or_read(lambda: read_catalogue(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "model.json").write_bytes(blob)
    _refused_or_read(lambda: read_card(tmp_path / "model.pt"))
    (tmp_path / "manifest.json").write_bytes(blob)
    (tmp_path / "specimens.csv").write_bytes(blob)
    _refused_or_read(lambda: read_specimens(tmp_path))
    (tmp_path / "index.json").write_bytes(blob)
    _refused_or_read(lambda: open_dataset(tmp_path))


@FUZZ
@given(attr=st.sampled_from(["k_pixel_invA", "energy_eV", "semiangle_mrad"]),
       # text (h5py writes no NUL and no lone surrogate), arrays, and numbers of every kind
       value=st.one_of(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
                       st.lists(st.floats(), min_size=0, max_size=3),
                       st.floats(allow_nan=True, allow_infinity=True)))
def test_calibration_attributes_of_any_type_are_read_or_refused_in_one_line(tmp_path, attr, value):
    import h5py

    from fourdcrystal.io.readers import open_4d
    from fourdcrystal.prediction.preparation import resolve_calibration

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.ones((2, 2, 16, 16), np.float32)
        f["data"].attrs[attr] = np.asarray(value) if isinstance(value, list) else value

    def read():
        with open_4d(path) as scan:
            resolve_calibration(str(path), scan.calibration, k_pixel_invA=None if attr == "k_pixel_invA" else 0.05)

    _refused_or_read(read)
