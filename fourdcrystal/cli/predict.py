"""`fourdcrystal predict`."""

from __future__ import annotations

import click

from ..errors import FourdError
from .common import config_option, load, network_options, opt, parse_pair
from .group import cli, options_named


@cli.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="DATA")
@config_option("predict")
@click.option("--model", "model_opt", type=str, help="A model.pt with its card, or release. The older form "
              "`predict MODEL DATA` (MODEL first) still works. [default: release, the model shipped in the package]")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Result HDF5 file. [default: DATA's name with -bragg.h5, in the current folder]")
@opt("predict", "k_pixel_invA", "--k-pixel", type=float, help="Detector pixel size in Å⁻¹ (overrides the file's).",
     default_text="from the file, or --camera-length")
@opt("predict", "camera_length_mm", "--camera-length", type=float,
     help="Camera length in mm; with --detector-pixel and --energy gives the pixel size.")
@opt("predict", "detector_pixel_um", "--detector-pixel", type=float, help="Detector pixel pitch in µm (e.g. 55).")
@opt("predict", "energy_eV", "--energy", type=float, help="Beam energy in eV, e.g. 300e3 (overrides the file's).",
     default_text="from the file")
@opt("predict", "semiangle_mrad", "--semiangle", type=float,
     help="Convergence semi-angle in mrad (overrides the file's).", default_text="from the file")
@opt("predict", "probe", "--probe", help="Vacuum probe: a 2D .npy or FILE.h5:/path from the same detector (a 4D "
                                          "vacuum scan is averaged).", default_text="--vacuum, else an ideal aperture")
@opt("predict", "vacuum", "--vacuum", help="Vacuum probe from the mean of a scan region R0:R1,C0:C1 (rows, columns; "
                                            "end exclusive).")
@click.option("--centre", "centre_px", help="Zero-beam position on the detector, I,J in pixels. [default: found in the mean pattern]")
@click.option("--scan-shape", help="ROWSxCOLS, for files that do not store it (.mib without its .hdr; TVIPS and MRC "
              "stacks of frames); a square frame count is otherwise taken, and said.")
@opt("predict", "method", "--method", type=click.Choice(["auto", "model", "baseline", "both"]),
     help="Whose vectors are the result (strain and export read them unless told otherwise): auto, the method "
           "the model card's test F1 shows best at the scan's counts per pattern (judged from a sample of its "
           "patterns; said on screen and kept in the file), model, baseline, or both (both run, auto chooses).")
@opt("predict", "baseline", "--baseline", is_flag=True,
     help="Also run the classical detector (py4DSTEM-style) into the file.")
@opt("predict", "maps", "--maps", is_flag=True, help="Also store the full predicted V_g and q_z per position (float16).")
@opt("predict", "min_relative", "--min-relative", type=float,
     help="Keep predicted peaks with V_g ≥ this fraction of the zero beam's V_g (or of the strongest maximum, "
           "where the card's tuned threshold is relative to that), for every pattern whatever its dose.",
     default_text="the thresholds tuned on the validation split, from the model card (one for patterns "
                   "under the card's low_dose_e electrons, judged from their counts)")
@opt("predict", "mask", "--mask", help="Detector mask: a 2D .npy or FILE.h5:/path of the detector's shape, nonzero "
                                        "where pixels are to be ignored (beam stop, bad pixels). Dead regions are "
                                        "found by themselves.")
@opt("predict", "max_peaks", "--max-peaks", type=int,
     help="At most this many peaks per pattern and method; a warning says when any position reaches it.",
     default_text="the card's, 400")
@opt("predict", "chunk", "--chunk", type=int, help="Scan positions read and processed together.")
@opt("predict", "batch_size", "--batch-size", type=int, help="Patterns per network call.")
@opt("predict", "device", "--device", help="auto, cpu, cuda or cuda:N.")
@network_options("predict")
@opt("predict", "prepare_first", "--prepare-first", type=int,
     help="Find the zero beam, dead pixels and the counts per pattern from the first N scan positions only. With "
           "--follow this is the first chunk; an offline run given the same N (and --chunk) gives the same vectors.",
     default_text="patterns spread over the whole scan; the first chunk with --follow")
@click.option("--follow", is_flag=True,
              help="The file is still being written (Merlin .mib with its .hdr, or HDF5 in SWMR mode): process each "
                   "chunk as its frames land, redraw OUT's PNG (virtual bright field and Bragg vector map so far) and "
                   "print the processing rate against the arrival rate every --refresh seconds; end when the scan is "
                   "complete. A file that stops growing for --idle seconds ends the run with the positions done kept "
                   "(rerun to go on).")
@opt("predict", "idle", "--idle", type=float, help="--follow: stop when the file has not grown for this many seconds.")
@opt("predict", "refresh", "--refresh", type=float,
     help="--follow: redraw the live picture and print the rates at most every this many seconds.")
@opt("predict", "scheduler", "--scheduler",
     help="Address of a dask.distributed scheduler (tcp://HOST:PORT) to spread chunks over.", default_text="local")
@opt("predict", "qz", "--qz/--no-qz", default_text="when the model card's test evaluation shows q_z skill",
     help="Write the model's q_z (Å⁻¹) of each Bragg vector.")
@opt("predict", "tilt", "--tilt/--no-tilt", default_text="the model's own tilt (learned read, q_z, or both combined) "
                                                           "where its card shows it ahead",
     help="Write each method's crystal tilt (θx, θy) per position and its standard error, in mrad: the zone axis "
           "points along (tan θx, tan θy, 1) from the beam, x and y along the detector's first and second axes "
           "(as qx, qy); a rotated crystal reads +θ, a tilted beam −θ. The baseline's: fitted to the Laue circle the "
           "Friedel pairs of disks trace (about 0.1 s per pattern); the model's: the learned tilt read of the disks at "
           "its vectors, its q_z, or its q_z and the Laue fit on its vectors combined (inverse-variance mean), "
           "whichever the model card shows best at the scan's dose, else the Laue fit. NaN where a fit fails. --tilt "
           "needs the beam energy (--energy or the file's); by default only the model's tilt is written, where the "
           "card shows one of its own ahead of the Laue fit (without the energy: q_z alone).")
@click.option("--overwrite", is_flag=True, help="Replace an existing result (or an unfinished run with other settings).")
def predict_cmd(paths, config_path, model_opt, out, centre_px, scan_shape, overwrite, follow, **_options) -> None:
    """Bragg vectors from the 4D-STEM file DATA with a model (--model: model.pt with its card).

    Without --model (or with --model release) the model shipped inside the package runs; its card
    (fourdcrystal/data/fcunet-release.json) states what it was trained on.

    DATA: FILE.npy, FILE.h5[:/dataset], py4DSTEM EMD 1.0, Merlin .mib (with its .hdr), fpd HDF5, and
    through RosettaSciIO .hspy, .blo, TVIPS .tvips and MRC .mrc (stacks of frames: give --scan-shape
    unless the scan is square), .dm3/.dm4, EMPAD .xml, FEI .ser, Arina *_master.h5. Patterns are resampled to the model's
    pixel size (Å⁻¹) on a grid that holds the whole detector, centred on the zero beam, read in
    chunks (memory stays flat), and the run resumes where it stopped if killed. Peaks are reported
    only where the detector recorded data, one disk radius away from its edges, dead regions and
    --mask; with the peak settings tuned on the validation split (model card). Writes OUT (HDF5: ragged Bragg vectors in Å⁻¹ per scan
    position, counts, virtual bright field, Bragg vector map) and OUT with .png (a summary).
    """
    def say(text: str) -> None:  # the library's messages name settings: print the options
        click.echo(options_named(text, click.get_current_context().command))

    from ..api import predict
    from ..settings import PredictSettings

    if len(paths) > 2 or (len(paths) == 2 and model_opt is not None):
        raise FourdError(f"expected DATA [--model MODEL] (or MODEL DATA), got {len(paths)} arguments"
                         + (" and --model" if model_opt is not None else "") + f": {' '.join(paths)}")
    model, data = (model_opt, paths[0]) if len(paths) == 1 else paths
    res = predict(data, out, PredictSettings(**load("predict", config_path)), model=model,
                  centre_px=parse_pair(centre_px, "--centre"), scan_shape=parse_pair(scan_shape, "--scan-shape", int, "x"),
                  overwrite=overwrite, follow=follow)
    rate = f"{res['patterns_per_s']:.1f} patterns/s" if res["patterns_per_s"] else "nothing left to do"
    vec = ", ".join(f"{m} {n}" for m, n in res["vectors"].items())
    cal, src = res["calibration"], res["calibration"]["sources"]
    say(f"calibration: pixel size {cal['k_pixel_invA']:.5f} Å⁻¹ ({src.get('k_pixel_invA', 'file')})"
               + (f", {cal['energy_eV'] / 1e3:g} kV ({src.get('energy_eV', 'file')})" if cal["energy_eV"] else "")
               + (f", {cal['semiangle_mrad']:g} mrad ({src.get('semiangle_mrad', 'file')})"
                  if cal["semiangle_mrad"] else "")
               + f"; zero beam at ({res['centre_px'][0]:.1f}, {res['centre_px'][1]:.1f}) px ({res['centre_source']});"
                 f" probe: {res['probe_source']}")
    say(f"{res['positions']} positions ({rate}); Bragg vectors: {vec}")
    say(f"result: the {res['method']} vectors ({res['method_reason']})")
    for m, t in res.get("tilt", {}).items():
        say(f"tilt ({m}, {t['source']}): fitted at {t['fitted']} of {res['positions']} positions"
                   + (f" ({res['tilt_reason']})" if m == "model" and res.get("tilt_reason") else ""))
    say(f"wrote {res['out']} and {res['png']}")
