"""Atomic writes: a reader never sees a half-written file or folder.

Everything is written under a temporary name in the destination's own directory (so the
final ``os.replace`` is a rename on one file system) and renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import FourdError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it is renamed to ``path`` only if the block succeeds.

    The temporary name is ``.NAME.XXXX.tmp`` in the same folder, so a killed writer leaves
    nothing under the final name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def check_new_folder(path: str | os.PathLike, overwrite: bool) -> None:
    """An output folder may be written: its name fits, and it does not exist unless ``overwrite`` (checked before
    any work, and again by :func:`atomic_directory` when it is written)."""
    path = Path(path)
    check_name_length(path, "output folder")
    if path.exists() and not overwrite:
        raise FourdError(f"output folder {path} already exists; set `overwrite` to replace it")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` only if the block succeeds.

    ``path`` existing is an error unless ``overwrite``; then the old folder is replaced
    only after the new one is complete, so a failure leaves the old result intact.
    """
    path = Path(path)
    check_new_folder(path, overwrite)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise FourdError(f"cannot write output folder {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, trash / "old")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# the longest name derived from an output's: ".NAME.XXXXXXXX.tmp" (mkstemp), NAME.lock, NAME.partial, the PNG
# sibling, ".NAME.partial.XXXXXXXX.tmp"; 32 bytes covers all of them
DERIVED_NAME_BYTES = 32


def check_name_length(path: str | os.PathLike, option: str = "`out`") -> None:
    """One line when ``path``'s last name, with the longest name derived from it, would not fit the file
    system's name limit (NAME_MAX, 255 bytes on Linux file systems), checked before any work."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255

    def short(text: str, n: int) -> str:
        return text if len(text) <= n else text[:n] + "…"

    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise FourdError(f"{option} {short(str(path), 60)}: the name {short(part, 40)} is {size} bytes, more "
                             f"than the file system's {limit}")
    size = len(os.fsencode(path.name))
    if size + DERIVED_NAME_BYTES > limit:
        raise FourdError(f"{option} {short(str(path), 60)}: the name {short(path.name, 40)} is {size} bytes; with "
                         f"the lock, partial and temporary names made from it it must stay within {limit - DERIVED_NAME_BYTES} "
                         f"bytes (the file system takes {limit})")


def check_new_file(path: str | os.PathLike, suffixes: tuple[str, ...], overwrite: bool) -> Path:
    """An output file about to be written: the expected suffix, not there yet (unless ``overwrite``), in an
    existing folder; one line naming ``out`` otherwise."""
    path = Path(path)
    check_name_length(path)
    if path.suffix.lower() not in suffixes:
        also = f" (or {', '.join(suffixes[1:])})" if len(suffixes) > 1 else ""
        raise FourdError(f"`out` {path}: expected an {suffixes[0]} file name{also}")
    if path.exists() and not overwrite:
        raise FourdError(f"{path} exists; set `overwrite` to replace it")
    if not path.parent.is_dir():
        raise FourdError(f"`out` {path}: folder {path.parent} does not exist")
    return path


def check_not_inputs(option: str, outputs: list, inputs: dict) -> None:
    """One line when a file this run would write is one it reads: ``outputs`` (paths, the first the one the user
    named with ``option``) against ``inputs`` ({what it is: path or None}). Checked before any work, so
    ``overwrite`` can never replace a model's weights, a probe or the data with a result."""
    named = Path(outputs[0])
    check_name_length(named, option)
    for what, path in inputs.items():
        if path is None:
            continue
        target = Path(path).resolve()
        for out in outputs:
            if Path(out).resolve() == target:
                also = "" if Path(out) == named else f" (it writes {Path(out).name} beside it)"
                raise FourdError(f"{option} {named}: would overwrite {what} {path}{also}; choose another name "
                                 f"(nothing was written)")


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Fail early, in one line, if ``path`` (a folder, or the nearest existing folder above it) cannot take
    new files: read-only file system, no permission. Tries a real file: os.access misses read-only mounts
    and ACLs."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fourdcrystal-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise FourdError(f"cannot write the {what} in {folder}: {exc.strerror}") from None


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` (``PATH.lock`` beside it, holding this process's id).

    A second run on the same output is refused with one line naming the process that holds it,
    instead of calling the first run's live partial file damaged. ``fcntl.flock`` locks are
    released by the kernel when the holder dies, so a killed run never leaves a stale lock.
    """
    import fcntl

    check_name_length(path, "output")
    lock = Path(str(path) + ".lock")
    try:  # the folder first: two runs that both find it missing must still meet at one lock
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FourdError(f"cannot write output folder {lock.parent} (for {Path(path).name}): "
                         f"{exc.strerror or exc}") from None
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise FourdError(f"cannot write {path}: its lock file {lock.name} cannot be created there "
                         f"({exc.strerror}); nothing was written") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise FourdError(f"{path} is being written by process {holder}; wait for it to finish or choose "
                             f"another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield lock
        finally:
            # unlinked while still held: a run that opened it meanwhile fails its non-blocking attempt
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def rank_zero_lock(path: str | Path):
    """:func:`output_lock` on ``path``, taken by the main process only: under torchrun every rank runs the stage
    and only rank 0 (environment ``RANK``) writes."""
    import contextlib

    return contextlib.nullcontext() if int(os.environ.get("RANK", "0")) != 0 else output_lock(path)
