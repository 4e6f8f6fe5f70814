"""The quickstart's demo scan as the three files a microscopist brings (issue 32), each written by its own tool.

    python experiments/three_files/make_files.py quickstart/demo_scan.h5 OUT          # the Merlin .mib + .hdr
    .py4dstem-venv/bin/python experiments/three_files/make_files.py --py4dstem OUT    # py4DSTEM's own EMD
    fpd-venv/bin/python experiments/three_files/make_files.py --fpd OUT               # fpd's own HDF5 (README)

1. ``OUT/demo.mib`` + ``demo.hdr``: the counts as a Merlin acquisition, written by ``tests/formats.write_mib``
   from the Merlin manual's frame layout (no Merlin at hand), with no calibration, as the detector writes them.
2. ``OUT/demo_py4dstem.h5``: ``py4DSTEM.save`` of a DataCube of the same counts with its Q pixel size in Å⁻¹.
3. ``OUT/demo_fpd.hdf5``: ``fpd.fpd_file.MerlinBinary(...).write_hdf5()`` converting the .mib + .hdr, the way fpd
   users make their files (no diffraction calibration: fpd does not know one).
``OUT/calibration.json`` keeps what the demo's file says: pixel size, energy, semi-angle.
"""

import json
import sys
from pathlib import Path


def merlin(src: str, out: Path) -> None:
    import h5py
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.formats import write_mib

    with h5py.File(src) as f:
        counts = f["scan/data"][...]
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["scan/data"].attrs.items()}
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "counts.npy", counts)
    write_mib(out / "demo.mib", counts.astype(np.uint16))
    (out / "calibration.json").write_text(json.dumps({k: v for k, v in attrs.items()
                                                      if isinstance(v, (int, float, str))}, indent=1) + "\n")
    print(f"wrote {out / 'demo.mib'} {counts.shape} and its .hdr; the file's attributes: {attrs}")


def py4dstem(out: Path) -> None:
    import numpy as np
    import py4DSTEM

    cal = json.loads((out / "calibration.json").read_text())
    dc = py4DSTEM.DataCube(data=np.load(out / "counts.npy").astype(np.uint16), name="datacube")
    dc.calibration.set_Q_pixel_size(float(cal["k_pixel_invA"]))
    dc.calibration.set_Q_pixel_units("A^-1")
    py4DSTEM.save(str(out / "demo_py4dstem.h5"), dc, mode="o")
    print(f"wrote {out / 'demo_py4dstem.h5'} with py4DSTEM {py4DSTEM.__version__}")


def fpd(out: Path) -> None:
    import collections
    import collections.abc

    import numpy as np

    # fpd 0.2.5 predates Python 3.10 and NumPy 1.24: the aliases it uses, put back
    collections.MutableMapping = collections.abc.MutableMapping
    for name, alias in (("float", float), ("int", int), ("complex", complex), ("object", object)):
        setattr(np, name, alias)
    import fpd as fpd_package
    import fpd.fpd_file as ff

    # and HDF5 1.12+ refuses gzip on its variable-length frame-header strings: those alone written uncompressed
    make_headers = ff._create_bin_header_str_dataset
    ff._create_bin_header_str_dataset = lambda group, kwd, *a: make_headers(
        group, {k: v for k, v in kwd.items() if k not in ("compression", "compression_opts", "shuffle", "fletcher32")}, *a)

    rows, cols, h, w = np.load(out / "counts.npy", mmap_mode="r").shape
    mb = ff.MerlinBinary(str(out / "demo.mib"), str(out / "demo.hdr"), [], ds_start_skip=0, row_end_skip=0,
                         scanYalu=(rows, "y", "pixel"), scanXalu=(cols, "x", "pixel"), detY=h, detX=w)
    mb.write_hdf5(str(out / "demo_fpd.hdf5"), ow=True)
    print(f"wrote {out / 'demo_fpd.hdf5'} with fpd {fpd_package.__version__}")


if __name__ == "__main__":
    if sys.argv[1] == "--py4dstem":
        py4dstem(Path(sys.argv[2]))
    elif sys.argv[1] == "--fpd":
        fpd(Path(sys.argv[2]))
    else:
        merlin(sys.argv[1], Path(sys.argv[2]))
