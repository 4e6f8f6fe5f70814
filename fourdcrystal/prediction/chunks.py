"""Processing chunks of scan positions: in this process (the next chunk read while this one runs) or on
a dask.distributed cluster (workers read the file themselves; the model is loaded once per worker).
Every path yields ``(start, result)`` in scan order, so the caller writes one file in order.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..detection.baseline import edge_map, find_and_refine, refine_positions
from ..detection.detect import DetectionSettings, baseline_peaks, estimate_dose, model_peaks
from ..errors import FourdError
from ..io.readers import Scan4D, open_4d, split_spec
from ..detection.peaks import Peaks, to_reciprocal
from .preparation import Preparation

if TYPE_CHECKING:
    from .stage import PredictConfig

class ChunkProcessor:
    """Raw detector patterns (n, K_x, K_y) → one chunk's results. Holds the model; built once per process."""

    def __init__(self, model, card: dict, prep: Preparation, config: PredictConfig):
        from ..model.inference import Predictor

        self.predictor = Predictor(model, card, config.device, config.batch_size, tta=config.tta,
                                   precision=config.precision, compile=config.compile)
        self.dk = prep.dk_invA
        self.prep = prep
        self.config = config
        self.baseline_settings = baseline_settings(config.settings, prep)
        from ..detection.detect import tilt_settings_from_card

        self.tilt_settings = config.tilt_settings or tilt_settings_from_card(card)[0]
        if config.tilt_model == "learned" and "model" in config.tilt_methods:
            from ..model.card import read_tilt_reader

            self.tilt_reader = read_tilt_reader()  # the shipped learned tilt read

    def __call__(self, raw: np.ndarray) -> dict:
        cfg, prep = self.config, self.prep
        t = defaultdict(float)
        t0 = time.perf_counter()
        vbf = (raw * prep.bf_mask).sum(axis=(1, 2)).astype(np.float32)
        if prep.detector_valid is not None:  # masked and dead pixels carry no signal into the network
            raw = raw * prep.detector_valid
        x = prep.resampler(raw)
        bg = prep.baseline_grid
        native = placed_on_detector(cfg.settings, prep)
        xb = bg.resampler(raw) if native or (cfg.baseline and bg.resampler is not prep.resampler) else x
        t["resample"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        vg, qz = self.predictor(x, prep.probe)
        t["model"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        shape = x.shape[-2:]
        settings = replace(cfg.settings, model=replace(cfg.settings.model, refine="vg")) if native else cfg.settings
        dose = estimate_dose(raw) if cfg.settings.model.low_dose_e > 0 else None
        peaks = model_peaks(vg, x, prep.probe, settings, prep.usable, dose_e=dose)
        t["model_peaks"] += time.perf_counter() - t0
        base_found = q = None
        if native:  # the model's peaks placed on the detector's own pixels
            t0 = time.perf_counter()
            start = self._native_start(peaks, shape, xb)
            search = cfg.settings.model.search_px * bg.px_scale
            b_cfg = self.baseline_settings.baseline
            on_edges = self._on_edges(dose, len(xb))
            if cfg.baseline:  # one correlation of each pattern serves both methods
                base_found, moved = find_and_refine(xb, bg.probe, b_cfg, start, search, bg.usable)
            else:  # only the patterns not placed on their edges below need the correlation
                low, moved = np.flatnonzero(~on_edges), list(start)
                for i, new in zip(low, refine_positions(xb[low], bg.probe, [start[i] for i in low], b_cfg, search)):
                    moved[i] = new
            self._place_on_edges(xb, start, search, on_edges, moved, base_found)
            t["correlation" if cfg.baseline else "model_peaks"] += time.perf_counter() - t0
            q = self._native_q(peaks, moved, xb)
        t0 = time.perf_counter()
        # the tilt is fitted on the finer of the two grids (the detector's, where the baseline runs on it)
        if not cfg.tilt_methods:
            tilt_grid = None
        elif xb is not x:
            zero_b = np.array(xb.shape[-2:]) // 2 - np.asarray(bg.q_offset_invA) / np.asarray(bg.dk_invA)
            tilt_grid = (xb, zero_b, bg.dk_invA)
        else:
            tilt_grid = (x, np.array(shape) // 2, self.dk)
        out = {"n": len(raw), "virtual_bf": vbf, "sum_pattern": x.sum(0, dtype=np.float64),
               "model": self._vectors(peaks, shape, qz, q=q, tilt_grid=tilt_grid, method="model")}
        t["model_peaks"] += time.perf_counter() - t0
        if cfg.baseline:
            t0 = time.perf_counter()
            if base_found is None:
                base_found = baseline_peaks(xb, bg.probe, self.baseline_settings, bg.usable)
            out["baseline"] = self._vectors(base_found, xb.shape[-2:], dk=bg.dk_invA, q_offset=bg.q_offset_invA,
                                            tilt_grid=tilt_grid, method="baseline")
            t["baseline"] += time.perf_counter() - t0
        if cfg.save_maps:
            out["maps"] = {"vg": vg.astype(np.float16), "qz": qz.astype(np.float16)}
        out["timing_s"] = dict(t)
        return out

    def _native_start(self, peaks: list, shape, xb: np.ndarray) -> list[np.ndarray]:
        """The model's peaks in the detector grid's pixels (where :func:`~fourdcrystal.detection.baseline.refine_positions`
        places them on the measured pattern's correlation with the probe, within ``search_px`` model pixels, in Å⁻¹
        kept). The model's grid is coarser here (it was resampled), the detector's pixels are not."""
        bg = self.prep.baseline_grid
        centre_b = np.array([s // 2 for s in xb.shape[-2:]], float)
        start = [to_reciprocal(p, shape, self.dk) - np.asarray(bg.q_offset_invA) for p in peaks]
        return [q / np.asarray(bg.dk_invA) + centre_b for q in start]

    def _on_edges(self, dose: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) bool: which patterns :meth:`_place_on_edges` places. With ``fine_detector_refine`` "edges", those of
        at least ``low_dose_e`` electrons by their counts (noise-free and integrating detectors count as high doses;
        ``dose`` None: every pattern); below that dose the gradient is mostly shot noise, and they keep the whole-disk
        correlation (``experiments/disk_edges``: 10⁴ and 10³ e⁻ on the strain surveys)."""
        m = self.config.settings.model
        if m.fine_detector_refine != "edges":
            return np.zeros(n, bool)
        return np.ones(n, bool) if dose is None else dose >= m.low_dose_e

    def _place_on_edges(self, xb: np.ndarray, start: list[np.ndarray], search: float, on_edges: np.ndarray,
                        moved: list[np.ndarray], base_found: list[Peaks] | None) -> None:
        """The patterns ``on_edges`` marks have the model's peaks (``moved``, from ``start``) and the baseline's
        disks (``base_found``) placed, in place, on the edges of the pattern and of the probe
        (:func:`~fourdcrystal.detection.baseline.edge_map`), one edge map of each pattern serving both."""
        idx = np.flatnonzero(on_edges)
        if not len(idx):
            return
        sigma = self.config.settings.model.edge_sigma_detector_px
        bg, b_cfg = self.prep.baseline_grid, self.baseline_settings.baseline
        edges, probe_edges = edge_map(xb[idx], sigma), edge_map(bg.probe, sigma)
        for i, new in zip(idx, refine_positions(edges, probe_edges, [start[i] for i in idx], b_cfg, search)):
            moved[i] = new
        if base_found is not None:
            again = refine_positions(edges, probe_edges, [base_found[i].pos_px for i in idx], b_cfg, search)
            for i, new in zip(idx, again):
                base_found[i] = Peaks(new, base_found[i].intensity)

    def _native_q(self, peaks: list, moved: list[np.ndarray], xb: np.ndarray) -> np.ndarray:
        """q (Å⁻¹) of the model's peaks at their positions ``moved`` on the detector grid's pixels."""
        bg = self.prep.baseline_grid
        q = [to_reciprocal(Peaks(m, p.intensity), xb.shape[-2:], bg.dk_invA) + np.asarray(bg.q_offset_invA)
             for m, p in zip(moved, peaks)]
        return np.concatenate(q) if q else np.zeros((0, 2))

    def _vectors(self, peaks: list, shape, qz: np.ndarray | None = None, dk=None, q_offset=(0.0, 0.0),
                 q: np.ndarray | None = None, tilt_grid: tuple | None = None, method: str = "model") -> dict:
        """The vectors of one chunk; ``q`` (Å⁻¹), where given, replaces the peaks' own positions (the map and
        q_z stay read at the peaks' pixels). Where ``method`` is in ``config.tilt_methods``, each position's
        crystal tilt: from q_z (``config.tilt_model`` "qz", the model), read by the learned tilt read ("learned",
        the model) or fitted to these vectors (else) on ``tilt_grid``: (patterns, the zero beam's pixel, pixel size
        Å⁻¹), or q_z and the fit combined ("combined")."""
        count = np.array([len(p) for p in peaks], np.int32)
        pos = np.concatenate([p.pos_px for p in peaks]) if count.sum() else np.zeros((0, 2))
        inten = np.concatenate([p.intensity for p in peaks]) if count.sum() else np.zeros(0)
        if q is None:
            q = to_reciprocal(Peaks(pos, inten), shape, self.dk if dk is None else dk) + np.asarray(q_offset)
        ij = np.clip(np.rint(pos).astype(int), 0, [shape[0] - 1, shape[1] - 1])
        bvm = np.zeros(shape, np.float64)
        np.add.at(bvm, (ij[:, 0], ij[:, 1]), inten)
        out = {"count": count, "qx_invA": q[:, 0].astype(np.float32), "qy_invA": q[:, 1].astype(np.float32),
               "intensity": inten.astype(np.float32), "bragg_vector_map": bvm}
        qz_at = qz[np.repeat(np.arange(len(peaks)), count), ij[:, 0], ij[:, 1]] if qz is not None else None
        if qz is not None and self.config.qz is not False:
            out["qz_invA"] = qz_at.astype(np.float32)
        tilted = method in self.config.tilt_methods
        ends = np.cumsum(count)
        source = self.config.tilt_model
        from_qz = tilted and qz is not None and source in ("qz", "combined")
        tilt = sigma = None
        if from_qz:
            from ..detection.tilt import qz_tilt

            span = self.tilt_settings.span_mrad
            tilt = np.array([qz_tilt(q[e - c:e], qz_at[e - c:e], inten[e - c:e], span) for c, e in zip(count, ends)],
                            float).reshape(-1, 2)
            # alone, the card's rms error at the dose; combined, the error the combination was chosen with
            qz_sigma = self.config.tilt_qz_sigma_mrad if source == "qz" else self.tilt_settings.qz_sigma_mrad
            sigma = np.where(np.isfinite(tilt), qz_sigma, np.nan)
        if tilted and tilt_grid is not None and not (from_qz and source == "qz"):
            from functools import partial

            from ..detection.tilt import combine_tilts, laue_tilt, learned_tilt
            from ..simulation.optics import wavelength_A

            pattern, centre, dk_t = tilt_grid
            if method == "model" and source == "learned":
                semiangle_mrad = self.prep.disk_radius_invA * wavelength_A(self.prep.energy_eV) * 1e3
                fit = partial(learned_tilt, energy_eV=self.prep.energy_eV, semiangle_mrad=semiangle_mrad,
                              disk_radius_invA=self.prep.disk_radius_invA, reader=self.tilt_reader,
                              settings=self.tilt_settings)
            else:
                fit = partial(laue_tilt, energy_eV=self.prep.energy_eV, disk_radius_invA=self.prep.disk_radius_invA,
                              settings=self.tilt_settings)
            fits = [fit(pattern[i], centre, dk_t, q[e - c:e]) for i, (c, e) in enumerate(zip(count, ends))]
            fitted = np.array([f.tilt_mrad for f in fits], float).reshape(-1, 2)
            fitted_sigma = np.array([f.sigma_mrad for f in fits], float).reshape(-1, 2)
            if tilt is None:  # the Laue fit or the learned read alone
                tilt, sigma = fitted, fitted_sigma
            else:  # "combined": the inverse-variance mean of the q_z tilt and the Laue fit, position by position
                both = [combine_tilts([a, b], [sa, sb]) for a, b, sa, sb in zip(tilt, fitted, sigma, fitted_sigma)]
                tilt = np.array([t for t, _ in both], float).reshape(-1, 2)
                sigma = np.array([sg for _, sg in both], float).reshape(-1, 2)
        if tilt is not None:
            out["tilt_mrad"] = tilt.astype(np.float32)
            out["tilt_sigma_mrad"] = sigma.astype(np.float32)
        return out


def placed_on_detector(settings: DetectionSettings, prep: Preparation) -> bool:
    """Whether the model's peaks are placed on the measured correlation (or its edges) at the detector's own pixels:
    where those are finer than the model's grid (by more than 5 %) and ``fine_detector_refine`` is ``"edges"`` or
    ``"correlation"``. The model's grid then loses the detector's precision (the patterns were resampled
    to coarser pixels); on the Si [110] strain series (0.0167 Å⁻¹ pixels, the model's 0.0296 Å⁻¹) this placement
    gave noise-free strain errors of 0.039–0.094 % against 0.047–0.170 % on the model's grid, and 0.15–0.27 %
    against 0.18–0.32 % at 10⁵ e⁻ (experiments/strain_noise)."""
    bg = prep.baseline_grid
    return (settings.model.fine_detector_refine in ("correlation", "edges") and bg.resampler is not prep.resampler
            and bg.px_scale > 1.05)


def baseline_settings(settings: DetectionSettings, prep: Preparation) -> DetectionSettings:
    """The baseline's settings for its own grid: its lengths in pixels (peak spacing, smoothing) scaled from the
    model's grid, where they were tuned, to the detector's pixels, so that they keep their values in Å⁻¹."""
    bg = prep.baseline_grid
    if bg.px_scale == 1.0:
        return settings
    b = settings.baseline
    return replace(settings, baseline=replace(b, sigma_px=b.sigma_px * bg.px_scale, peaks=replace(
        b.peaks, min_spacing_px=b.peaks.min_spacing_px * bg.px_scale)))


_WORKER_CACHE: dict[str, ChunkProcessor] = {}


def _remote_chunk(job: dict, start: int, stop: int) -> dict:
    """A dask task: open the file on the worker, process positions start…stop−1 (model cached per worker)."""
    key = job["fingerprint"]
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        from ..model.card import load_model

        _WORKER_CACHE[key] = ChunkProcessor(*load_model(job["model"]), job["prep"], job["config"])
    t0 = time.perf_counter()
    with open_4d(job["data"], job["scan_shape"]) as scan:
        raw = scan.read(start, stop)
    t_read = time.perf_counter() - t0
    out = _WORKER_CACHE[key](raw)
    out["timing_s"]["read"] = t_read
    return out


def chunks_local(scan: Scan4D, starts: list[int], proc: ChunkProcessor, wait=None):
    """(start, result) in order; the next chunk is read in a thread while this one is processed. ``wait(n)``, where
    given, returns once the first ``n`` positions are in the file (one still being written); the time it waits
    is not counted as reading."""

    def read(s):
        if wait is not None:
            wait(s + proc.config.chunk_positions)
        t0 = time.perf_counter()
        raw = scan.read(s, s + proc.config.chunk_positions)
        return raw, time.perf_counter() - t0

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, starts[0]) if starts else None
        for k, s in enumerate(starts):
            raw, t_read = pending.result()
            pending = pool.submit(read, starts[k + 1]) if k + 1 < len(starts) else None
            res = proc(raw)
            res["timing_s"]["read"] = t_read
            yield s, res


def chunks_distributed(address: str, data: str, scan: Scan4D, starts: list[int], config: PredictConfig, prep: Preparation,
                        model_path, fingerprint: str):
    """(start, result) in order from a dask.distributed cluster; at most 2 chunks per worker in flight."""
    from dask.distributed import Client, wait

    try:
        client = Client(address, timeout=20)
    except (OSError, TimeoutError) as exc:
        raise FourdError(f"`scheduler` {address}: cannot reach the dask scheduler ({exc})") from None
    path, inner = split_spec(data)  # workers open the file themselves: an absolute path
    job = {"fingerprint": fingerprint, "model": str(Path(model_path).resolve()), "prep": prep, "config": config,
           "data": str(path.resolve()) + (f":{inner}" if inner else ""), "scan_shape": scan.scan_shape}
    try:
        window = max(2, 2 * len(client.scheduler_info()["workers"]))
        futures: dict[int, object] = {}
        queue = list(starts)
        for s in starts:
            while queue and len(futures) < window:
                q = queue.pop(0)
                futures[q] = client.submit(_remote_chunk, job, q, q + config.chunk_positions, pure=False)
            fut = futures.pop(s)
            wait(fut)
            yield s, fut.result()
    finally:
        client.close()
