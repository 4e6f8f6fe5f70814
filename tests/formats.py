"""Writers of detector files for tests, from the formats' specifications (not from our readers).

Quantum Detectors Merlin .mib (Merlin manual, "MQ1" frame header): every frame is an ASCII header
padded to its declared size, then the pixels big-endian, row by row from the bottom row up (as
RosettaSciIO reads them: it flips the rows back). A single-chip 12-bit frame:
``MQ1,<seq 6 digits>,<header bytes 5 digits>,<chips 2>,<X 4>,<Y 4>,U16,   1x1,01,<date time>,
<shutter s>,<counter>,<colour>,<gain>,<8 thresholds>,3RX,<27 DACs>,MQ1A,<timestamp Z>,<ns>ns,<bits>,``.
The acquisition header (.hdr) holds "Frames in Acquisition (Number)" and "Frames per Trigger
(Number)" (one trigger per scan line).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_DACS = "175,511,000,000,000,000,000,000,125,255,125,125,100,100,082,100,087,030,128,004,255,129,128,176,168,511,511"


def mib_header(seq: int, shape: tuple[int, int], dtype: str = "U16", header_bytes: int = 384) -> bytes:
    bits = {"U08": 6, "U16": 12, "U32": 24}[dtype]
    text = (f"MQ1,{seq:06d},{header_bytes:05d},01,{shape[1]:04d},{shape[0]:04d},{dtype},   1x1,01,"
            f"2026-11-21 10:00:00.000000,0.001000,0,0,0,"
            + ",".join(["1.200000E+1", "5.110000E+2"] + ["0.000000E+0"] * 6)
            + f",3RX,{_DACS},MQ1A,2026-11-21T10:00:00.000000000Z,1000000ns,{bits},")
    raw = text.encode("ascii")
    assert len(raw) <= header_bytes
    return raw + b" " * (header_bytes - len(raw))


def merlin_hdr(frames: int, per_trigger: int, dtype: str = "U16") -> str:
    """A Merlin Quad acquisition header (.hdr) as the Merlin software 0.77 writes it: CRLF lines of "key:\tvalue",
    from "HDR," to "End" (the keys and their order as in the .hdr files RosettaSciIO's and fpd's tests hold)."""
    depth = {"U08": 6, "U16": 12, "U32": 24}[dtype]
    lines = ["HDR,\t", "Time and Date Stamp (day, mnth, yr, hr, min, s):\t21/11/2026 10:00:00",
             "Chip ID:\tW529_F5,-,-,-", "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX",
             "Assembly Size (NX1, 2X2):\t   1x1", "Chip Mode  (SPM, CSM, CM, CSCM):\tSPM",
             f"Counter Depth (number):\t{depth}", "Gain:\tSLGM", "Active Counters:\tAlternating",
             "Thresholds (keV):\t" + ",".join(["1.200000E+1", "5.110000E+2"] + ["0.000000E+0"] * 6),
             f"DACs:\t{_DACS}", "bpc File:\tc:\\MERLIN_Quad_Config\\W529_F5\\W529_F5_SPM.bpc,,,",
             "DAC File:\tc:\\MERLIN_Quad_Config\\W529_F5\\W529_F5_SPM.dacs,,,", "Gap Fill Mode:\tNone",
             "Flat Field File:\tNone", "Dead Time File:\tDummy (C:\\<NUL>\\)",
             "Acquisition Type (Normal, Th_scan, Config):\tNormal", f"Frames in Acquisition (Number):\t{frames}",
             f"Frames per Trigger (Number):\t{per_trigger}",
             "Trigger Start (Positive, Negative, Internal):\tRising Edge",
             "Trigger Stop (Positive, Negative, Internal):\tInternal", "Sensor Bias (V):\t120 V",
             "Sensor Polarity (Positive, Negative):\tPositive", "Temperature (C):\tBoard Temp 37.384918 Deg C",
             "Humidity (%):\tBoard Humidity 1.331848 ", "Medipix Clock (MHz):\t120MHz",
             "Readout System:\tMerlin Quad", "Software Version:\t0.77.0.16", "End\t"]
    return "\r\n".join(lines)


def write_mib(path: Path, data: np.ndarray, dtype: str = "U16", with_hdr: bool = True) -> Path:
    """``data`` (rows, cols, K_y, K_x) of counts → a .mib (and .hdr) as the Merlin software writes them."""
    rows, cols, h, w = data.shape
    np_type = {"U08": ">u1", "U16": ">u2", "U32": ">u4"}[dtype]
    with open(path, "wb") as fh:
        for n, frame in enumerate(data.reshape(-1, h, w)):
            fh.write(mib_header(n + 1, (h, w), dtype))
            fh.write(np.ascontiguousarray(frame[::-1], dtype=np_type).tobytes())  # rows bottom-up
    if with_hdr:
        Path(path).with_suffix(".hdr").write_text(merlin_hdr(rows * cols, cols, dtype), newline="")
    return Path(path)
