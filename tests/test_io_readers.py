"""4D-STEM readers: the same patterns from .npy and HDF5, read in chunks; one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fourdcrystal.errors import FourdError
from fourdcrystal.io.readers import open_4d


@pytest.fixture
def cube(tmp_path):
    data = np.random.default_rng(0).random((5, 7, 16, 16)).astype(np.float32)
    np.save(tmp_path / "scan.npy", data)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        ds = f.create_dataset("experiment/data", data=data, chunks=(1, 1, 16, 16))
        ds.attrs["k_pixel_invA"] = 0.02
    return data, tmp_path


def test_npy_and_hdf5_give_the_same_chunks(cube):
    data, tmp = cube
    flat = data.reshape(-1, 16, 16)
    for spec in (tmp / "scan.npy", f"{tmp / 'scan.h5'}:/experiment/data", tmp / "scan.h5"):
        with open_4d(spec) as scan:
            assert scan.shape == (5, 7, 16, 16) and len(scan) == 35
            # chunks that cross scan rows, and a short last chunk
            got = np.concatenate([scan.read(a, a + 8) for a in range(0, len(scan), 8)])
            np.testing.assert_array_equal(got, flat)
    with open_4d(tmp / "scan.h5") as scan:
        assert scan.calibration == {"k_pixel_invA": 0.02}


def test_reader_errors_are_one_line(cube, tmp_path):
    _, tmp = cube
    np.save(tmp / "three.npy", np.zeros((4, 8, 8)))
    cases = [(tmp / "three.npy", "expected 4D data"), (tmp / "scan.tif", "unknown 4D-STEM format"),
             (f"{tmp / 'scan.h5'}:/nothing", "no dataset '/nothing'"), (tmp / "absent.npy", "not found")]
    for spec, fragment in cases:
        with pytest.raises(FourdError, match=fragment) as info:
            open_4d(spec)
        assert "\n" not in str(info.value)
    with h5py.File(tmp / "two.h5", "w") as f:
        f["a"] = np.zeros((1, 1, 16, 16))
        f["b"] = np.zeros((1, 1, 16, 16))
        f["small"] = np.zeros((1, 1, 2, 27))  # metadata, never a candidate
    with pytest.raises(FourdError, match="several 4D-STEM datasets"):
        open_4d(tmp / "two.h5")


def test_mib_scan_shape_from_the_hdr_only_where_it_gives_one(tmp_path):
    """A line-triggered .hdr gives the frames per line; one frame per trigger gives no shape: a square frame count
    is guessed with a note, any other is refused in one line naming --scan-shape; --scan-shape reads it."""
    from fourdcrystal.errors import FourdError
    from fourdcrystal.io.readers import open_4d

    from .formats import write_mib

    frames = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(2, 4, 16, 16) % 50
    line = write_mib(tmp_path / "line.mib", frames)
    with open_4d(line) as scan:
        assert scan.scan_shape == (2, 4) and not scan.notes

    def frame_triggered(name, data):
        path = write_mib(tmp_path / name, data)
        path.with_suffix(".hdr").write_text(
            "HDR,\nFrames in Acquisition (Number):\t%d\nFrames per Trigger (Number):\t1\nEnd\t" % (
                data.shape[0] * data.shape[1]))
        return path

    eight = frame_triggered("eight.mib", frames)
    with pytest.raises(FourdError, match=r"8 frames and a \.hdr that gives no scan shape; give the scan shape as "
                                         r"`scan_shape`"):
        open_4d(eight)
    with open_4d(eight, (8, 1)) as scan:
        assert scan.scan_shape == (8, 1)
    nine = frame_triggered("nine.mib", np.zeros((3, 3, 16, 16), np.uint16))
    with open_4d(nine) as scan:
        assert scan.scan_shape == (3, 3)
        assert len(scan.notes) == 1 and "gives no scan shape" in scan.notes[0] and "guess" in scan.notes[0]


def _rsciio_signal(counts: np.ndarray, k_pixel_invA: float) -> dict:
    """A 4D diffraction signal as RosettaSciIO's writers take it (HyperSpy's dictionary)."""
    sx, sy, kx, ky = counts.shape
    axes = [{"size": s, "name": n, "scale": sc, "offset": 0.0, "units": u, "navigate": nav}
            for s, n, sc, u, nav in ((sx, "x", 1.0, "nm", True), (sy, "y", 1.0, "nm", True),
                                     (kx, "kx", k_pixel_invA * 10, "1/nm", False),
                                     (ky, "ky", k_pixel_invA * 10, "1/nm", False))]
    meta = {"General": {"title": "scan"}, "Signal": {"signal_type": "electron_diffraction"},
            "Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "convergence_angle": 3.0}}}
    return {"data": counts, "axes": axes, "metadata": meta, "original_metadata": {}, "tmp_parameters": {},
            "attributes": {"_lazy": False}, "package_info": {}, "learning_results": {}, "models": {}}


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return np.random.default_rng(3).poisson(30, (3, 4, 32, 32)).astype(np.uint8)


def test_blockfile_written_by_rosettasciio_reads_back(counts, tmp_path):
    """A .blo that RosettaSciIO's blockfile writer made: the same counts, scan shape from the file; blockfile keeps
    no reciprocal-space scale, so no pixel size is taken from it."""
    from rsciio.blockfile import file_writer

    file_writer(str(tmp_path / "scan.blo"), _rsciio_signal(counts, 0.02))
    with open_4d(tmp_path / "scan.blo") as s:
        assert s.shape == counts.shape and s.format == "rsciio:blockfile" and not s.notes
        np.testing.assert_array_equal(s.read(0, 12).reshape(counts.shape), counts)
        np.testing.assert_array_equal(s.read(5, 7), counts.reshape(12, 32, 32)[5:7])
        assert "k_pixel_invA" not in s.calibration


def test_tvips_written_by_rosettasciio_is_a_stack_shaped_by_the_scan(counts, tmp_path):
    """RosettaSciIO's TVIPS writer stores frames (NAME_000.tvips); read back with --scan-shape they are the scan,
    row by row; a square frame count without it is a guess the reader says; otherwise one line."""
    from rsciio.tvips import file_writer

    file_writer(str(tmp_path / "scan.tvips"), _rsciio_signal(counts, 0.02))
    path = tmp_path / "scan_000.tvips"
    with open_4d(path, scan_shape=(3, 4)) as s:
        assert s.shape == counts.shape and not s.notes
        np.testing.assert_array_equal(s.read(0, 12).reshape(counts.shape), counts)
    with pytest.raises(FourdError, match=r"a stack of 12 frames with no scan shape; give it as `scan_shape`"):
        open_4d(path)
    with pytest.raises(FourdError, match=r"scan shape 4x4 needs 16 frames, the file holds 12"):
        open_4d(path, scan_shape=(4, 4))
    square = counts.reshape(12, 32, 32)[:9].reshape(3, 3, 32, 32)
    file_writer(str(tmp_path / "sq.tvips"), _rsciio_signal(square, 0.02))
    with open_4d(tmp_path / "sq_000.tvips") as s:
        assert s.shape == (3, 3, 32, 32) and "is a guess from the 9 frames (square)" in s.notes[0]
        np.testing.assert_array_equal(s.read(0, 9).reshape(square.shape), square)


def test_mrc_written_by_mrcfile_is_a_stack_shaped_by_the_scan(counts, tmp_path):
    """An MRC stack that the mrcfile package (CCP-EM's reference implementation) wrote, read through RosettaSciIO:
    the frames in scan order under --scan-shape."""
    import mrcfile

    with mrcfile.new(tmp_path / "scan.mrc") as m:
        m.set_data(counts.reshape(12, 32, 32).astype(np.float32))
    with open_4d(tmp_path / "scan.mrc", scan_shape=(3, 4)) as s:
        assert s.shape == counts.shape and s.format == "rsciio:mrc"
        np.testing.assert_array_equal(s.read(0, 12).reshape(counts.shape), counts.astype(np.float32))


def test_zspy_is_refused_with_the_reason(tmp_path):
    (tmp_path / "scan.zspy").mkdir()
    with pytest.raises(FourdError, match=r"scan.zspy: RosettaSciIO reads .zspy with zarr < 3, which abTEM"):
        open_4d(tmp_path / "scan.zspy")
