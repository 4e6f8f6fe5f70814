#!/usr/bin/env python
"""Benchmark the simulate engine against stock abTEM and the FFT floor.

One specimen: Si [001], 200 kV, 2 mrad, ~20 nm thick, 256×256 output (a 384² grid). Prints
patterns per second for

* stock abTEM's best call: CrystalPotential (one period's potential, repeated) + Probe.multislice
  with FFTW (abtem's default config), eager;
* the fourdcrystal engine: transmission functions of the distinct slices once, then 2 FFTs per
  slice (one probe position, and a batch of positions);
* the FFT floor: just the 2 FFTs per slice on the same grid (FFTW, planned, in place);

and the ratios engine/stock (target ≥ 3) and floor/engine (target ≤ 1.5), on one core; then
the aggregate rate of two engine processes (two cores).

    python scripts/bench_simulate.py [--thickness 200] [--lateral 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _si():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def _setup(args):
    from fourdcrystal.simulation import engine
    from fourdcrystal.simulation.optics import antialiased_gpts
    from fourdcrystal.specimens.specimen import build_specimen

    sp = build_specimen(_si(), (0, 0, 1), lateral_size_A=args.lateral, thickness_A=[args.thickness])
    g = antialiased_gpts(256)
    return sp, (g, g), engine


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_abtem(args):
    import abtem

    abtem.config.set({"fft": "fftw", "fftw.threads": 1, "fftw.planning_effort": "FFTW_" + args.planning.upper(),
                      "dask.lazy": False, "diagnostics.progress_bar": False})
    sp, gpts, _ = _setup(args)
    p = sp.plan.period_z_A
    unit = sp.atoms[sp.atoms.positions[:, 2] < p - 1e-9]
    unit.set_cell([sp.plan.box_A[0], sp.plan.box_A[1], p])
    n_unit = max(1, round(p / 2.0))
    reps = int(round(sp.thickness_A / p))
    pot_unit = abtem.Potential(unit, gpts=gpts, slice_thickness=p / n_unit, projection="infinite")
    crystal = abtem.CrystalPotential(pot_unit, repetitions=(1, 1, reps))
    probe = abtem.Probe(gpts=gpts, extent=sp.plan.box_A, energy=200e3, semiangle_cutoff=2.0)
    pos = np.array([[sp.plan.box_A[0] / 2, sp.plan.box_A[1] / 2]])

    def run():
        w = probe.multislice(crystal, scan=pos, lazy=False)
        w.diffraction_patterns(max_angle="cutoff")

    run()  # FFTW planning, numba compilation
    return _best(run, args.repeat), crystal.num_slices


def bench_engine(args, batch=1, planning=None):
    planning = planning or args.planning
    sp, gpts, engine = _setup(args)
    box = sp.plan.box_A
    pos = np.tile([[box[0] / 2, box[1] / 2]], (batch, 1))
    waves = engine.probe_waves(gpts, box, 200e3, 2.0, pos)

    def run():
        stack = engine.build_slices(sp.atoms, gpts, 2.0, sp.thickness_A, sp.plan.period_z_A)
        t = engine.transmission_functions(stack.potential, 200e3, stack.sampling_A)
        prop = engine.fresnel_propagator(gpts, stack.sampling_A, stack.slice_thickness_A, 200e3)
        engine.propagate(waves, t, stack.order, prop, [stack.num_slices], crop=(256, 256), planning=planning)
        return stack.num_slices

    n = run()
    return _best(run, args.repeat) / batch, n


def bench_full_sample(args):
    from fourdcrystal.simulation.cbed import Optics, simulate_specimen

    sp, gpts, _ = _setup(args)
    box = sp.plan.box_A
    optics = Optics(output_px=256, semiangle_mrad=2.0)

    def run():
        simulate_specimen(sp, optics, [(box[0] / 2, box[1] / 2)], planning=args.planning)

    run()
    return _best(run, args.repeat)


def bench_labels(args):
    """V_g and q_z labels alone (lateral FFTs of the distinct slices, z-FFT of the stack), one exit plane."""
    from fourdcrystal.simulation import labels

    sp, gpts, engine = _setup(args)
    stack = engine.build_slices(sp.atoms, gpts, 2.0, sp.thickness_A, sp.plan.period_z_A)

    def run():
        labels.bragg_labels(stack.potential, stack.order, stack.slice_thickness_A, [stack.num_slices], (256, 256))

    run()
    return _best(run, args.repeat)


def bench_floor(args, n_slices):
    """2 FFTs per slice on the engine's own buffer shape (1, G, G), same planning effort."""
    import pyfftw

    _, gpts, engine = _setup(args)
    a = pyfftw.empty_aligned((1, *gpts), dtype=np.complex64)
    flags = (engine.PLANNING[args.planning],)
    fwd = pyfftw.FFTW(a, a, axes=(-2, -1), direction="FFTW_FORWARD", flags=flags, threads=1)
    inv = pyfftw.FFTW(a, a, axes=(-2, -1), direction="FFTW_BACKWARD", flags=flags, threads=1)
    a[...] = np.random.default_rng(0).standard_normal(a.shape)

    def run():
        for _ in range(n_slices):
            fwd()
            inv()

    run()
    return _best(run, args.repeat)


def _engine_worker(args, q):
    q.put(bench_engine(args)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thickness", type=float, default=200.0, help="specimen thickness in Å")
    ap.add_argument("--lateral", type=float, default=40.0, help="lateral box in Å")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats (best is kept)")
    ap.add_argument("--planning", default="patient", choices=["measure", "patient"],
                    help="FFTW planning effort for all three (abTEM, engine, floor)")
    args = ap.parse_args()

    t_stock, n_stock = bench_abtem(args)
    t_engine, n = bench_engine(args)
    t_batch, _ = bench_engine(args, batch=4)
    t_full = bench_full_sample(args)
    t_labels = bench_labels(args)
    t_floor = bench_floor(args, n)
    print(f"Si [001], 200 kV, 2 mrad, {args.thickness:g} Å ({n} slices), 256×256 output, 384² grid, one core, "
          f"FFTW_{args.planning.upper()} plans for all")
    print(f"  stock abTEM (CrystalPotential + FFTW)  {1 / t_stock:7.2f} patterns/s   ({n_stock} slices)")
    print(f"  fourdcrystal engine                    {1 / t_engine:7.2f} patterns/s   (potential, transmission, loop)")
    print(f"  fourdcrystal engine, batch of 4        {1 / t_batch:7.2f} patterns/s   (4 probe positions per loop)")
    print(f"  full sample (engine + probe + labels)  {1 / t_full:7.2f} patterns/s")
    print(f"  labels alone (V_g, q_z)                {1 / t_labels:7.2f} patterns/s   "
          f"({100 * t_labels / t_full:.0f} % of a full sample; target <= 25 %)")
    print(f"  FFT floor (2 FFTs per slice)           {1 / t_floor:7.2f} patterns/s")
    print(f"  10^6 labelled 256² patterns at this thickness, one per specimen: {t_full * 1e6 / 3600:,.0f} core-hours "
          f"(target <= 100)")
    print(f"  engine / stock abTEM = {t_stock / t_engine:.2f}x (target >= 3)")
    print(f"  engine time / floor  = {t_engine / t_floor:.2f}x (target <= 1.5)")
    print(f"  batch-of-4 time per pattern / floor = {t_batch / t_floor:.2f}x")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_engine_worker, args=(args, q)) for _ in range(2)]
    for p in procs:
        p.start()
    per = [q.get() for _ in procs]
    for p in procs:
        p.join()
    print(f"  two cores (2 processes): {sum(1 / t for t in per):.2f} patterns/s")
    if not math.isfinite(t_engine):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
