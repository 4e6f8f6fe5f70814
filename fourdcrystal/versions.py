"""Software versions recorded in every output file, so results can be traced."""

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PACKAGES = ("fourdcrystal", "numpy", "pymatgen", "spglib", "mp-api", "ase", "abtem", "torch", "h5py")


def software_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Return ``{package: version}`` for the packages that shape our outputs."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict:
    """The machine a measurement ran on: CPU count and the processor's model name (Linux; else the architecture)."""
    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "processor": name}
