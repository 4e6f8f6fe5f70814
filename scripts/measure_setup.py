"""Run the README's two set-up lines exactly as written, each in a fresh clone, and time them.

    python scripts/measure_setup.py                  # → benchmarks/setup.json
    python scripts/measure_setup.py --keep /tmp/m    # keep the clones there

Line 1 (install + ``fourdcrystal quickstart``) and the Development section's line (install + the
test suite) are taken from README.md itself, so what is timed is what a reader runs. Each runs
with ``bash -c`` in a new clone of this repository's HEAD (commit what you want measured). The
pytest summary gives the test counts and the testing time. ``scripts/readme_numbers.py`` renders
the README's set-up paragraph from the result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fourdcrystal.versions import machine

ROOT = Path(__file__).resolve().parent.parent


def readme_lines() -> tuple[str, str]:
    """The first line of the README that sets up and runs the quickstart, and the one that runs the tests."""
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]
    setup = [ln for ln in lines if ln.startswith("python3.11 -m venv") and ln.endswith("fourdcrystal quickstart")]
    tests = [ln for ln in lines if ln.startswith("python3.11 -m venv") and "pytest" in ln]
    if len(setup) != 1 or len(tests) != 1:
        sys.exit("README.md: expected exactly one quickstart set-up line and one test line")
    return setup[0], tests[0]


def _clone(where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    return where


def _timed(line: str, cwd: Path, log: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["FOURDCRYSTAL_MEASURING_SETUP"] = "1"  # tests/test_readme.py: the set-up block is being measured
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "/.venv/" not in p)
    t0 = time.perf_counter()
    res = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        sys.exit(f"{line!r} failed ({res.returncode}) in {cwd}; log: {log}\n{(res.stdout + res.stderr)[-3000:]}")
    return wall, res.stdout + res.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="make the clones here and keep them [default: a temporary folder, removed]")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "setup.json"))
    args = ap.parse_args(argv)
    base = Path(args.keep or tempfile.mkdtemp(prefix="fourdcrystal-setup-"))
    base.mkdir(parents=True, exist_ok=True)
    line1, line2 = readme_lines()
    try:
        first = _clone(base / "first-run")
        wall1, _ = _timed(line1, first, base / "line1.log")
        venv_bytes = sum(f.stat().st_size for f in (first / ".venv").rglob("*") if f.is_file() and not f.is_symlink())
        wall2, out2 = _timed(line2, _clone(base / "tests"), base / "line2.log")
        summary = re.findall(r"(\d+) passed(?:, (\d+) skipped)?.* in ([\d.]+)s", out2)
        if not summary:
            sys.exit(f"no pytest summary in {base / 'line2.log'}")
        passed, skipped, seconds = summary[-1]
        record = {
            "commands": [line1, line2],
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "machine": machine(),
            "line1_wall_s": round(wall1, 1), "venv_MB": round(venv_bytes / 1e6), "line2_wall_s": round(wall2, 1),
            "tests_passed": int(passed), "tests_skipped": int(skipped or 0), "pytest_s": round(float(seconds), 1),
        }
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
