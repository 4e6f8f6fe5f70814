#!/usr/bin/env python
"""A new sweep of bad inputs that the fault table (scripts/fault_sweep.py) does not name.

Issue 31's acceptance: on a sweep of >= 300 new cases, no crash, no data loss, no silent wrong result, no hang, and
<= 3 % answered with anything but one ``error:`` line and exit 2. The cases are made by rule from the command line
itself (every numeric and choice option of every subcommand, with values no user means: NaN, infinities written
as overflows, words, empty strings, fractions for counts, lists with holes) and by hand for the options that take
lists, regions, vectors and files. A case whose (subcommand, option, value) the fault table already runs, with
the same value or one that parses to the same number, is left out. Each case runs in-process on the fault table's
workspace and is judged by its own ``check`` (exit 2, one line ``error: …`` naming the option or file, no
traceback, no new or changed file), under a 120 s alarm (a hang).

    python experiments/new_sweep/sweep.py [--workspace DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import signal
import sys
import time
import traceback
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]


def _fault_sweep():
    spec = importlib.util.spec_from_file_location("fault_sweep", ROOT / "scripts" / "fault_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_sweep"] = module
    spec.loader.exec_module(module)
    return module


FS = _fault_sweep()


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _same(a: str, b: str) -> bool:
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return a.strip() == b.strip()
    return (math.isnan(x) and math.isnan(y)) or x == y


def table_triples() -> list[tuple[str, str, str]]:
    """(subcommand, option, value) of every case of the fault table, read off its command lines."""
    ws = Path("/WS")
    out = []
    for case in FS.cases():
        args = [a for a in case.args(ws) if a not in ("-q", "-v")]
        cmd = args[0]
        i = 1
        while i < len(args):
            a = args[i]
            if a.startswith("--") and "=" in a:
                opt, value = a.split("=", 1)
                out.append((cmd, opt, value))
            elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.append((cmd, a, args[i + 1]))
                i += 1
            i += 1
    return out


FLOAT_VALUES = ["nan", "-nan", "-inf", "1e999", "-1e999", "abc", "", "1,2", "0x10"]
INT_VALUES = ["2.5", "abc", "", "nan", "1e3", "-99999999999999999999", "0x10", "1,2"]

# options whose value is a list, a region, a vector or a file: bad values written by hand
BY_HAND: dict[str, list[tuple[str, list[str]]]] = {
    "evaluate": [("--doses", ["abc", "1e5,,1e4", "-1e5", "nan", "0", "clean,clean2"]), ("--device", ["tpu", "cuda:x"]),
                 ("--split", ["TEST", ""]), ("--tta", ["d8"]), ("--precision", ["fp16"])],
    "predict": [("--probe", ["{ws}/missing.npy", "{ws}/emptydir", "{ws}/empty.h5"]),
                ("--vacuum", ["a:b", "2:0,0:4", "0:100,0:100", "0:2", ""]),
                ("--centre", ["nan,3", "1", "a,b", "inf,inf", "1,2,3"]),
                ("--scan-shape", ["0x4", "-2x2", "abc", "2x", "4x4x4"]),
                ("--mask", ["{ws}/missing.npy", "{ws}/emptydir", "{ws}/badmask.npy"]),
                ("--device", ["tpu", "cuda:x"]), ("--model", ["{ws}/missing.pt", "no-such-shipped-model"]),
                ("--method", ["all", ""]), ("--tta", ["d8"]), ("--precision", ["fp16"])],
    "select": [("--per-prototype", ["abc", "-1", "nan"]), ("--elements", ["Xx", "Si,,O", "1"]),
               ("--exclude-elements", ["Qq"]), ("--num-sites", ["5-2", "abc", "-3", "1-"]),
               ("--source", ["icsd", ""]), ("--files", ["{ws}/missing.cif"])],
    "simulate": [("--energy", ["abc", "200e3,,", "nan,200e3", "-2e5"]), ("--semiangle", ["nan", "abc", "1,,2", "-3"]),
                 ("--parametrization", ["peng"]), ("--probe-position", ["edge"]),
                 ("--structure", ["{ws}/missing.cif", "{ws}/empty.h5"])],
    "supercell": [("--phi", ["abc", "nan", "1,,2"]), ("--lateral-size", ["0", "-10", "abc", "nan"]),
                  ("--thickness", ["0", "abc", "nan", "20,,40"]), ("--strain-pct", ["abc", "nan", "1,2,3,4,5"]),
                  ("--axis-choice", ["longest"]), ("--tilt-mode", ["both"])],
    "strain": [("--reference", ["abc", "0:0,0:4", "9:12,0:4", "0:2", "crystals"]),
               ("--g1", ["1", "nan,0", "a,b", "0,0"]), ("--g2", ["inf,0", "1,2,3"]),
               ("--structure", ["{ws}/missing.cif"]), ("--weights", ["cubic", ""]), ("--correct", ["all"]),
               ("--method", ["both"])],
    "strain-benchmark": [("--crystals", ["Unobtainium", "", ",,"]), ("--thicknesses", ["0", "abc", "-100", "nan"]),
                         ("--doses", ["abc", "0", "-1e5", "nan"]), ("--model", ["{ws}/missing.pt"]),
                         ("--py4dstem-python", ["{ws}/missing-python"]), ("--py4dstem-settings", ["{ws}/missing.json"])],
    "tune": [("--doses", ["abc", "1e5,,", "nan"]), ("--strain-benchmark", ["{ws}/missing.json"]),
             ("--split", ["validation"])],
    "train": [("--init", ["{ws}/missing.pt", "{ws}/empty.h5"]), ("--schedule", ["linear"]),
              ("--domain", ["fourier"]), ("--decoders", ["3"]), ("--loss-weighting", ["auto"]),
              ("--device", ["tpu"])],
    "export": [("--method", ["both", ""])],
    "inspect": [],
}


def _setup(ws: Path) -> None:
    import numpy as np

    FS._npy(ws, "ok.npy", FS._scan("ok"))
    (ws / "empty.h5").write_bytes(b"")
    (ws / "emptydir").mkdir(exist_ok=True)
    np.save(ws / "badmask.npy", np.ones((3, 5), bool))


def new_cases() -> list:
    from fourdcrystal.cli import cli

    bases = FS._bases()
    known = table_triples()
    cases, left_out = [], 0

    def named(cmd: str, opt: str, value: str) -> bool:
        return any(c == cmd and o == opt and _same(v, value) for c, o, v in known)

    def add(cmd: str, opt: str, value: str, cls: str) -> None:
        nonlocal left_out
        if named(cmd, opt, value):
            left_out += 1
            return
        # the message names the option (a file's name too, where the file is what is wrong)
        cases.append(FS.Case(f"{cmd}: {opt}={value!r}", cls,
                             FS._with(bases[cmd], lambda ws, o=opt, v=value: [f"{o}={v.format(ws=ws)}"]),
                             opt, setup=_setup, tags={f"file:{Path(value).name}"} if "{ws}" in value else set()))

    for cmd in bases:
        command = cli.commands[cmd]
        for p in command.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            opt = max(p.opts, key=len)
            if isinstance(p.type, click.types.FloatParamType):
                for v in FLOAT_VALUES:
                    add(cmd, opt, v, "float option")
            elif isinstance(p.type, click.types.IntParamType):
                for v in INT_VALUES:
                    add(cmd, opt, v, "integer option")
        for opt, values in BY_HAND.get(cmd, []):
            for v in values:
                add(cmd, opt, v, "by hand")
    return cases, left_out


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer in 120 s")


def _in_process(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from fourdcrystal.cli import cli

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        res = CliRunner().invoke(cli, args, catch_exceptions=True)
    finally:
        signal.alarm(0)
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "".join(traceback.format_exception(res.exception))
    return res.exit_code, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="new-sweep", help="folder for the inputs [default: new-sweep]")
    ap.add_argument("--json", help="write every case's verdict here")
    ap.add_argument("--only", help="run the cases whose name contains this")
    args = ap.parse_args(argv)
    ws = Path(args.workspace).resolve()
    t0 = time.perf_counter()
    if not (ws / "model" / "model.pt").exists():
        FS.build_workspace(ws, _in_process)
    cases, left_out = new_cases()
    cases = [c for c in cases if not args.only or args.only in c.name]
    print(f"{len(cases)} new cases ({left_out} left out: the fault table runs them)")
    rows = []
    for case in cases:
        t = time.perf_counter()
        ok, msg = FS.check(case, ws, _in_process)
        named_file = next((t[5:] for t in case.tags if t.startswith("file:")), None)
        problems, _, message = msg.partition(" | ")
        if not ok and named_file and problems.startswith("message lacks") and ";" not in problems \
                and named_file in message:
            ok = True  # one line naming the file that is wrong, not the option that gave it: as promised too
        rows.append({"case": case.name, "class": case.cls, "ok": ok, "message": msg,
                     "seconds": round(time.perf_counter() - t, 2)})
        print(f"{'ok  ' if ok else 'FAIL'}  {case.name}\n      {msg}", flush=True)
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} answered as promised; {len(bad)} not "
          f"({100 * len(bad) / max(len(rows), 1):.1f} %), {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": len(rows), "not_as_promised": len(bad),
                                               "left_out_as_named_by_the_table": left_out, "rows": rows},
                                              indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
