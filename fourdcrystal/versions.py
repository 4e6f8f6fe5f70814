"""Software versions recorded in every output file, so results can be traced."""

from importlib.metadata import PackageNotFoundError, version
import platform

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
