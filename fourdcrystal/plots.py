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
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    return path


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
