"""Every PNG the tool draws. Matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(**kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(**kw)


def save_figure(fig, path: str | Path) -> Path:
    """Save atomically (temporary name, then rename)."""
    from .atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)


def _log_imshow(ax, img: np.ndarray, floor: float, **kw):
    """``img`` on a log colour scale from max(smallest positive, floor·max) to its maximum."""
    from matplotlib.colors import LogNorm

    img = np.asarray(img, dtype=float)
    pos = img[img > 0]
    lo = max(float(pos.min()) if pos.size else 1e-6, float(img.max()) * floor)
    return ax.imshow(np.clip(img, lo, None), norm=LogNorm(lo, max(float(img.max()), lo * 10)), cmap="magma", **kw)


def specimen_preview(specimen, title: str, path: str | Path) -> Path:
    """Projected structure seen down the beam (+z into the page), coloured by element, with the cell."""
    from ase.data import chemical_symbols
    from ase.data.colors import jmol_colors

    plt, (fig, ax) = _figure(figsize=(6.4, 6.4))
    atoms = specimen.atoms
    xy = atoms.positions[:, :2]
    z = atoms.numbers
    # one marker per projected column: atoms that overlap in projection are drawn once
    key = np.round(xy, 2)
    _, first = np.unique(np.column_stack([key, z]), axis=0, return_index=True)
    first = np.sort(first)
    for number in np.unique(z[first]):
        sel = first[z[first] == number]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8 + 0.25 * number, color=jmol_colors[number], edgecolors="k",
                   linewidths=0.2, label=chemical_symbols[number])
    lx, ly = specimen.plan.box_A
    ax.plot([0, lx, lx, 0, 0], [0, 0, ly, ly, 0], "k-", lw=1.0, label="box")
    if specimen.plan.mode == "periodic":
        cx, cy = specimen.plan.cell_A
        ax.plot([0, cx, cx, 0, 0], [0, 0, cy, cy, 0], "r--", lw=1.2, label="periodic cell")
    else:
        ax.plot([lx / 2], [ly / 2], "r+", ms=14, mew=2, label="probe (cut box: keep centred)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def sample_montage(samples: list[dict], titles: list[str], k_sampling_invA: list, path: str | Path,
                   zoom: float = 1.0) -> Path:
    """Rows of samples, columns cbed / probe / vg / qz, on axes in Å⁻¹.

    cbed, probe and vg are drawn on a log scale (their dynamic range spans decades); qz on a
    diverging scale masked where vg is weak (q_z means nothing off the reflections).
    ``zoom`` < 1 shows the central part of the patterns.
    """
    n = len(samples)
    plt, (fig, axes) = _figure(nrows=n, ncols=4, figsize=(14, 3.4 * n + 0.4), squeeze=False,
                               layout="constrained")
    for row, (s, title, dk) in enumerate(zip(samples, titles, k_sampling_invA)):
        h, w = s["cbed"].shape
        ext = [(-w // 2 - 0.5) * dk[1], (w - w // 2 - 0.5) * dk[1], (h - h // 2 - 0.5) * dk[0], (-h // 2 - 0.5) * dk[0]]
        for col, name in enumerate(("cbed", "probe", "vg", "qz")):
            ax = axes[row, col]
            img = np.asarray(s[name], dtype=float)
            if name == "qz":
                vg = np.asarray(s["vg"], dtype=float)
                img = np.ma.masked_where(vg < 0.02 * vg.max(), img)
                lim = float(np.abs(img).max()) if img.count() else 1.0
                im = ax.imshow(img, cmap="RdBu_r", vmin=-lim or -1, vmax=lim or 1, extent=ext)
                label = "q_z (Å⁻¹)"
            else:
                im = _log_imshow(ax, img, 1e-5, extent=ext)
                label = {"cbed": "intensity (probe max = 1)", "probe": "intensity", "vg": "V_g (V·Å)"}[name]
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
            r = zoom * max(abs(ext[0]), abs(ext[2]))
            ax.set_xlim(-r, r)
            ax.set_ylim(r, -r)
            ax.set_title(f"{title}\n{name}" if col == 0 else name, fontsize=8, loc="left" if col == 0 else "center")
            ax.set_xlabel("q_y (Å⁻¹)", fontsize=8)
            ax.set_ylabel("q_x (Å⁻¹)", fontsize=8)
            ax.tick_params(labelsize=7)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def model_label(weights: str | Path) -> str:
    """A model as figures name it: its folder and file (``smoke-model/model.pt``, ``data/fcunet-release.pt``)."""
    p = Path(weights)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def training_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss curves per epoch: train/val total, vg NMSE (MSE for runs logged before it) with the line of an
    all-zero prediction (NMSE 1), V_g-weighted qz MSE (log scales), and the learning rate; ``title`` (the
    model's name) above them."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    plt, (fig, axes) = _figure(ncols=4, figsize=(16, 3.6), layout="constrained")
    vg_key = "vg_nmse" if all("val_vg_nmse" in h for h in history) else "vg_mse"
    panels = [("loss", "loss (train: weighted sum)", "loss"),
              (vg_key, "vg NMSE (error² / label²)" if vg_key == "vg_nmse" else "vg MSE (relative V_g)",
               "NMSE" if vg_key == "vg_nmse" else "MSE"),
              ("qz_wmse", "qz MSE, V_g-weighted (normalised)", "weighted MSE (q_z / q_z scale)²")]
    for ax, (key, panel_title, ylabel) in zip(axes, panels):
        for split, style in (("train", "o-"), ("val", "s--")):
            values = [h.get(f"{split}_{key}") for h in history]
            if key == "loss" and split == "train" and any(v is not None and v <= 0 for v in values):
                continue  # learned task weights make the train total non-positive: not for a log axis
            ax.plot(epochs, values, style, ms=3, label=split)
        if key == "vg_nmse":
            ax.axhline(1.0, color="0.4", lw=1, ls=":", label="all-zero prediction")
        ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[3].plot(epochs, [h["lr"] for h in history], "k.-")
    axes[3].set_title("learning rate at epoch end", fontsize=9)
    axes[3].set_xlabel("epoch")
    axes[3].set_ylabel("learning rate")
    axes[3].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def metrics_vs_thickness(report: dict, path: str | Path) -> Path:
    """F1, position error (px) and intensity correlation against thickness: model and baseline, one line per dose."""
    table = report["by_dose_and_thickness_A"]
    panels = [("f1", "Bragg peak F1"), ("position_error_px", "position error (px)"),
              ("intensity_pearson_r", "intensity Pearson r (matched, off zero beam)")]
    plt, (fig, axes) = _figure(ncols=3, figsize=(15, 4), layout="constrained")
    colours = {"model": "tab:blue", "baseline": "tab:orange"}
    styles = ["o-", "s--", "^:", "d-."]
    for ax, (key, title) in zip(axes, panels):
        for method, by_dose in table.items():
            for k, (dose, by_t) in enumerate(by_dose.items()):
                t = sorted(by_t, key=float)
                v = [by_t[x][key] for x in t]
                v = [np.nan if y is None else y for y in v]
                ax.plot([float(x) for x in t], v, styles[k % len(styles)], color=colours.get(method),
                        label=f"{method}, {dose}", ms=4)
        ax.set_xlabel("thickness (Å)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{model_label(report['model'])} vs classical baseline on the {report['split']} split "
                 f"({report['patterns']} patterns)", fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def evaluation_gallery(rows: list, dose: str, path: str | Path, names: list[str] | None = None,
                       title: str = "") -> Path:
    """Worst patterns: input (log), label V_g with the required reflections (exact positions), predicted V_g with
    the model's peaks, baseline peaks.

    Axes in Å⁻¹ from the zero beam (q_y across, q_x down, like the detector); colour bars on a log
    scale: the input in units of the vacuum probe's maximum, V_g relative to the zero beam.
    """
    n = len(rows)
    plt, (fig, axes) = _figure(nrows=n, ncols=4, figsize=(17, 3.7 * n + 0.4), squeeze=False, layout="constrained")
    for i, (f1, _n, shard, row, cbed, vg_true, vg_pred, true_pk, model_pk, base_pk, thick, dk) in enumerate(rows):
        dk = np.broadcast_to(np.asarray(dk, float), (2,))
        h, w = cbed.shape

        def to_q(pk):  # peak pixels → (q_y, q_x) in Å⁻¹ for plotting
            return (pk.pos_px[:, 1] - w // 2) * dk[1], (pk.pos_px[:, 0] - h // 2) * dk[0]

        extent = [(-w // 2 - 0.5) * dk[1], (w - w // 2 - 0.5) * dk[1], (h - h // 2 - 0.5) * dk[0],
                  (-h // 2 - 0.5) * dk[0]]
        name = names[i] if names else f"{shard}:{row}"
        panels = [(cbed, "input (probe max = 1)", None),
                  (vg_true, f"label V_g; required reflections ({len(true_pk)}, +)", None),
                  (np.clip(vg_pred, 0, None), f"model V_g (x), F1 {f1:.2f}; required +", model_pk),
                  (cbed, "baseline disks (x); required +", base_pk)]
        for j, (img, panel_title, found) in enumerate(panels):
            ax = axes[i, j]
            im = _log_imshow(ax, img, 1e-4, extent=extent)
            if found is not None:
                ax.plot(*to_q(found), "gx" if j == 2 else "wx", ms=6)
            if j >= 1:
                ax.plot(*to_q(true_pk), "c+", ms=7)
            ax.set_title((f"{name}, {thick:g} Å, dose {dose}\n" if j == 0 else "\n") + panel_title, fontsize=8,
                         loc="left" if j == 0 else "center")
            ax.set_xlabel("q_y (Å⁻¹)", fontsize=8)
            ax.set_ylabel("q_x (Å⁻¹)", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def _grid_extent(shape, dk) -> list[float]:
    """imshow's extent in Å⁻¹ of an (H, W) grid of ``dk`` (per axis) pixels with q = 0 at pixel (H//2, W//2)."""
    h, w = shape
    return [(-w // 2 - 0.5) * dk[1], (w - w // 2 - 0.5) * dk[1], (h - h // 2 - 0.5) * dk[0], (-h // 2 - 0.5) * dk[0]]


def prediction_summary(summary: dict, card: dict, title: str, path: str | Path, checks: dict | None = None) -> Path:
    """Virtual bright field, mean pattern with the Bragg vector map's peaks, peak counts, Bragg vector map.

    One row per method (model, and the baseline when it ran). Axes of the pattern panels in Å⁻¹.
    Each method's pixel size is ``summary[method]["k_sampling_invA"]`` (else the card's); the mean
    pattern is on the model's grid. ``checks`` shows what tells whether to trust the result:
    ``centre_px``/``centre_source`` (the zero beam found, marked ○ at q = 0 of the mean pattern),
    ``caps`` (method → the peak cap: positions that reached it are marked × on the count map) and
    ``warnings`` (lines added under the title).
    """
    checks = checks or {}
    from .detection.peaks import PeakConfig, find_peaks

    methods = [m for m in ("model", "baseline") if m in summary]

    def pixel_size(m):
        return np.broadcast_to(np.asarray(summary.get(m, {}).get("k_sampling_invA", card["input"]["k_sampling_invA"]),
                                          float), (2,))

    h, w = summary["mean_pattern"].shape
    dk = pixel_size("model")
    extent = _grid_extent((h, w), dk)
    plt, (fig, axes) = _figure(nrows=len(methods), ncols=4, figsize=(16, 4 * len(methods)), squeeze=False,
                               layout="constrained")
    mean = summary["mean_pattern"]
    bright = np.argwhere(mean > 1e-3 * mean.max()) if mean.max() > 0 else np.zeros((0, 2))
    reach = (np.abs(bright - [h // 2, w // 2]) * dk).max() if len(bright) else h // 2 * dk[0]
    lim = min(1.15 * reach + 2 * dk.max(), abs(extent[0]))  # zoom on where the pattern has signal
    for r, m in enumerate(methods):
        s = summary[m]
        if r == 0:
            im = axes[r, 0].imshow(summary["virtual_bf"], cmap="gray")
            axes[r, 0].set_title("virtual bright field", fontsize=9)
            axes[r, 0].set_xlabel("scan y (position)")
            axes[r, 0].set_ylabel("scan x (position)")
            fig.colorbar(im, ax=axes[r, 0], shrink=0.8, label="counts in the bright disk")
        else:  # peaks per position, every method, as a histogram
            ax = axes[r, 0]
            for mm in methods:
                counts = np.asarray(summary[mm]["count"]).ravel()
                ax.hist(counts, bins=min(30, max(5, len(np.unique(counts)))), alpha=0.6, label=mm)
            ax.set_xlabel("Bragg peaks per position")
            ax.set_ylabel("positions")
            ax.set_title("peaks per position, both methods", fontsize=9)
            ax.legend(fontsize=8)
        bvm = s["bragg_vector_map"]
        bh, bw = bvm.shape
        bdk = pixel_size(m)
        pk = find_peaks(bvm, PeakConfig(min_relative=0.02, max_peaks=200)) if bvm.max() > 0 else None
        im = _log_imshow(axes[r, 1], mean, 1e-4, extent=extent)
        fig.colorbar(im, ax=axes[r, 1], shrink=0.8, label="mean pattern (counts, log)")
        if pk is not None and len(pk):
            axes[r, 1].plot((pk.pos_px[:, 1] - bw // 2) * bdk[1], (pk.pos_px[:, 0] - bh // 2) * bdk[0], "c+", ms=8,
                            label=f"{m} Bragg vector map peaks")
        if "centre_px" in checks:  # the mean pattern is centred on the zero beam predict found: q = 0
            i, j = checks["centre_px"]
            axes[r, 1].plot([0.0], [0.0], "o", mfc="none", mec="r", ms=14,
                            label=f"zero beam: detector ({i:.1f}, {j:.1f}) px, {checks.get('centre_source', '')}")
        axes[r, 1].legend(fontsize=7, loc="lower left")
        axes[r, 1].set_title(f"mean pattern, {m} Bragg peaks (+), zero beam (○)", fontsize=9)
        count = np.asarray(s["count"])
        im = axes[r, 2].imshow(count, cmap="viridis")
        cap = checks.get("caps", {}).get(m)
        at_cap = np.argwhere(count >= cap) if cap else np.zeros((0, 2), int)
        if len(at_cap):
            axes[r, 2].plot(at_cap[:, 1], at_cap[:, 0], "rx", ms=7, label=f"at the cap of {cap} peaks")
            axes[r, 2].legend(fontsize=7, loc="lower left")
        axes[r, 2].set_title(f"{m}: Bragg peaks per position ({s['vectors']} in all"
                             + (f"; {len(at_cap)} at the cap ×" if len(at_cap) else "") + ")", fontsize=9)
        axes[r, 2].set_xlabel("scan y (position)")
        axes[r, 2].set_ylabel("scan x (position)")
        fig.colorbar(im, ax=axes[r, 2], shrink=0.8, label="Bragg peaks per position")
        if bvm.max() > 0:  # smoothed for display: single-pixel peaks would vanish when the figure is scaled
            from scipy.ndimage import gaussian_filter

            im = _log_imshow(axes[r, 3], gaussian_filter(bvm, 1.0), 1e-3, extent=_grid_extent((bh, bw), bdk))
            fig.colorbar(im, ax=axes[r, 3], shrink=0.8,
                         label="summed V_g (rel. zero beam)" if m == "model" else "summed correlation")
        axes[r, 3].set_title(f"{m}: Bragg vector map (intensity-weighted)", fontsize=9)
        for ax in (axes[r, 1], axes[r, 3]):
            ax.set_xlim(-lim, lim)
            ax.set_ylim(lim, -lim)
            ax.set_xlabel("q_y (Å⁻¹)")
            ax.set_ylabel("q_x (Å⁻¹)")
    warnings = list(checks.get("warnings", []))
    fig.suptitle("\n".join([title] + [f"warning: {w}" for w in warnings[:4]]
                           + ([f"(and {len(warnings) - 4} more warnings)"] if len(warnings) > 4 else [])), fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def strain_figure(result: dict, vectors, path: str | Path, title: str = "", scan_step_nm: float | None = None) -> Path:
    """ε_xx, ε_yy, ε_xy (%), rotation θ (°), fit residual and indexed vectors per scan position; where the vectors
    carry the crystal tilt (``predict --tilt``), a third row: θx, θy and its standard error (mrad).

    Failed positions are grey (for the tilt: positions whose tilt fit failed). Strain colour limits are symmetric about 0 at the 99th
    percentile of |ε| (so one wild position does not wash out the map); scan axes in nm where
    ``scan_step_nm`` is known (pixel centres at 0, step, 2·step, …), else in positions.
    """
    from matplotlib import colormaps

    ok = result["fit_ok"]
    panels = [("exx", "ε_xx (%)", 100.0, "RdBu_r", True), ("eyy", "ε_yy (%)", 100.0, "RdBu_r", True),
              ("exy", "ε_xy (%)", 100.0, "RdBu_r", True), ("theta_deg", "rotation θ (°)", 1.0, "PuOr_r", True),
              ("residual_rms", f"fit residual r.m.s. ({vectors.units})", 1.0, "viridis", False),
              ("n_indexed", "indexed vectors", 1.0, "viridis", False)]
    tilt = getattr(vectors, "tilt_mrad", None)
    plt, (fig, axes) = _figure(nrows=2 if tilt is None else 3, ncols=3, figsize=(13, 8 if tilt is None else 12),
                               layout="constrained")
    strain_vals = np.concatenate([np.abs(100 * result[k][ok]) for k in ("exx", "eyy", "exy")]) if ok.any() \
        else np.zeros(1)
    strain_lim = max(float(np.percentile(strain_vals, 99)), 1e-3)
    rows, cols = ok.shape
    kw, unit = ({}, "position") if scan_step_nm is None else (
        {"extent": [-0.5 * scan_step_nm, (cols - 0.5) * scan_step_nm, (rows - 0.5) * scan_step_nm,
                    -0.5 * scan_step_nm]}, "nm")
    for ax, (key, label, scale, cmap, symmetric) in zip(axes.ravel(), panels):
        img = np.where(ok, result[key] * scale, np.nan).astype(float)
        cm = colormaps[cmap].with_extremes(bad="0.75")
        if symmetric:
            lim = strain_lim if key != "theta_deg" else max(float(np.nanpercentile(np.abs(img), 99))
                                                             if ok.any() else 0.0, 1e-3)
            im = ax.imshow(img, cmap=cm, vmin=-lim, vmax=lim, **kw)
        else:
            im = ax.imshow(img, cmap=cm, **kw)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"scan y ({unit})")
        ax.set_ylabel(f"scan x ({unit})")
        fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    if tilt is not None:
        sigma = np.hypot(vectors.tilt_sigma_mrad[..., 0], vectors.tilt_sigma_mrad[..., 1])
        lim = max(float(np.nanpercentile(np.abs(tilt), 99)) if np.isfinite(tilt).any() else 0.0, 0.1)
        for ax, img, label, cmap, vlim in ((axes[2, 0], tilt[..., 0], "crystal tilt θx (mrad)", "PiYG", lim),
                                           (axes[2, 1], tilt[..., 1], "crystal tilt θy (mrad)", "PiYG", lim),
                                           (axes[2, 2], sigma, "tilt standard error |σ| (mrad)", "viridis", None)):
            cm = colormaps[cmap].with_extremes(bad="0.75")
            im = ax.imshow(img, cmap=cm, **({"vmin": -vlim, "vmax": vlim} if vlim else {}), **kw)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel(f"scan y ({unit})")
            ax.set_ylabel(f"scan x ({unit})")
            fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    g = result["reference_basis"]
    fig.suptitle(f"{title}\nreference g1 = ({g[0, 0]:.4f}, {g[1, 0]:.4f}), g2 = ({g[0, 1]:.4f}, {g[1, 1]:.4f}) "
                 f"{vectors.units}; {result['failed']} of {ok.size} positions not fitted (grey)", fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def strain_benchmark_png(report: dict, path: str | Path) -> Path:
    """rms strain error (%) against thickness (Å), one panel per dose, one line per method (the strain benchmark's
    summary over every crystal and zone axis)."""
    table = report["summary"]["by_dose_and_thickness_A"]
    doses = sorted(table, key=lambda d: (d != "clean", -float(d) if d != "clean" else 0.0))
    plt, (fig, axes) = _figure(ncols=len(doses), figsize=(3.6 * len(doses), 3.4), layout="constrained", sharey=True,
                               squeeze=False)
    colours = {"model": "tab:blue", "baseline": "tab:orange", "py4DSTEM": "tab:green"}
    for ax, dose in zip(axes[0], doses):
        by_t = table[dose]
        t = sorted(by_t, key=float)
        for method in report["methods"]:
            v = [by_t[x].get(method, {}).get("strain_rms_error_pct") for x in t]
            ax.plot([float(x) for x in t], [np.nan if y is None else y for y in v], "o-", color=colours.get(method),
                    label=method, ms=4)
        ax.set_xlabel("thickness (Å)")
        ax.set_title(f"{dose} e⁻/pattern" if dose != "clean" else "noise-free", fontsize=9)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("rms strain error (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"strain benchmark: {', '.join(report['config']['crystals'])}; model {report['model']}", fontsize=10)
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def live_view(live: dict, card: dict, title: str, path: str | Path) -> Path:
    """The picture ``predict --follow`` redraws while a scan is written: the virtual bright field so far (positions
    not yet processed blank) and the Bragg vector map of each method so far (axes in Å⁻¹, log colour scale).

    ``live`` is :meth:`fourdcrystal.io.results.ResultFile.live`'s dict. Two panels per row and no layout engine:
    it is drawn every few seconds beside the processing, so it is kept cheap.
    """
    methods = [m for m in ("model", "baseline") if m in live]
    plt, (fig, axes) = _figure(nrows=1, ncols=1 + len(methods), figsize=(4.2 * (1 + len(methods)), 4.2),
                               squeeze=False)
    ax = axes[0, 0]
    im = ax.imshow(live["virtual_bf"], cmap="gray")
    fig.colorbar(im, ax=ax, fraction=0.046, label="virtual bright field (counts)")
    ax.set_title(f"virtual BF: {live['positions_done']} positions")
    ax.set_xlabel("scan column")
    ax.set_ylabel("scan row")
    for ax, m in zip(axes[0, 1:], methods):
        bvm = np.asarray(live[m]["bragg_vector_map"], float)
        dk = np.broadcast_to(np.asarray(live[m].get("k_sampling_invA", card["input"]["k_sampling_invA"]), float), (2,))
        extent = _grid_extent(bvm.shape, dk)
        if bvm.max() > 0:
            im = _log_imshow(ax, bvm, 1e-4, extent=extent)
            fig.colorbar(im, ax=ax, fraction=0.046, label="summed intensity")
        ax.set_title(f"{m}: Bragg vector map, {live[m]['vectors']} vectors")
        ax.set_xlabel("q_y (Å⁻¹)")
        ax.set_ylabel("q_x (Å⁻¹)")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)
