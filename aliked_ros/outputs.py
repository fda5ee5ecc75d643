"""Where the tools write: one policy for every output of every tool (README, "Outputs and failures").

- Inputs are sacred: no output is, or lies inside, a path the run reads, and an output that would be replaced
  never holds one.
- One overwrite rule: an existing output is refused unless ``--overwrite``; with it, only what the tool itself writes
  is replaced (each :class:`OutputKind` recognises its own files), and anything else in the way is named and left.
- Checked before compute: the directory that will hold an output exists and a file can be created in it, before any
  engine loads.
- Files are written atomically (a temporary file beside the target, fsync, rename) with the mode the umask gives,
  so a reader never sees half a file and a failure leaves the old file or none.

Standard library only: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aliked_ros.errors import AlikedError


class OutputError(AlikedError, OSError):
    """An output that cannot be written where it was asked for (a read-only disk, a file in the way, a full disk)."""


@dataclass(frozen=True)
class OutputKind:
    """What a tool writes at one path: ``noun`` names it in sentences ("an ONNX file written by aliked-ros"),
    ``recognise`` says whether an existing path is one (and so may be replaced with ``--overwrite``), ``directory``
    whether it is a directory (a ROS 2 bag) rather than a file."""

    noun: str
    recognise: Callable[[Path], bool]
    directory: bool = False


# --- inputs ------------------------------------------------------------------------------------------------------


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def same_path(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links followed)."""
    return _resolved(first) == _resolved(second)


def check_not_an_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str,
                       replaces_directory: bool = False) -> None:
    """OutputError where ``path`` is an input, lies inside an input directory, or (``replaces_directory``: the
    output is a directory that may be replaced) holds an input. Links are followed: a link to an input is that
    input."""
    target = _resolved(path)
    for source in inputs:
        if source is None or str(source) == "":
            continue
        resolved = _resolved(source)
        if target == resolved:
            raise OutputError(f"{flag} {path} is the input {source}; write the result somewhere else.")
        if _inside(target, resolved):
            raise OutputError(f"{flag} {path} lies inside the input {source}; write the result somewhere else.")
        if replaces_directory and _inside(resolved, target):
            raise OutputError(f"{flag} {path} holds the input {source}; write the result somewhere else.")


# --- the directory that holds an output --------------------------------------------------------------------------


def _reason(error: OSError) -> str:
    return {errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.ENOSPC: "its disk is full",
            errno.EDQUOT: "the disk quota is used up"}.get(error.errno, error.strerror or str(error))


def check_writable_directory(directory: str | os.PathLike, flag: str, target: str | os.PathLike) -> None:
    """OutputError unless ``directory`` exists and a file can be created in it (tried for real: permissions, a
    read-only mount and a full disk all show only then)."""
    directory = Path(directory)
    if not directory.exists():
        raise OutputError(f"The directory {directory} of {flag} {target} does not exist; create it first.")
    if not directory.is_dir():
        raise OutputError(f"{flag} {target}: {directory} is a file, not a directory; choose another output.")
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".aliked_ros-write-test-")
    except OSError as error:
        raise OutputError(f"{flag} {target} cannot be written: {directory} refuses new files "
                          f"({_reason(error)}); choose another output.") from None
    os.close(handle)
    os.unlink(probe)


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where a missing output directory would be created)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- one output --------------------------------------------------------------------------------------------------


def check_output(path: str | os.PathLike, kind: OutputKind, *, flag: str, overwrite: bool,
                 inputs: Iterable[str | os.PathLike | None] = (), create_parents: bool = False) -> Path:
    """``path`` checked for writing one output of ``kind`` before any compute (see the module's policy).

    Returns the path; raises OutputError naming what is in the way. ``create_parents``: missing directories above
    ``path`` will be created (the nearest existing one must then be writable); otherwise the parent must exist.
    """
    path = Path(path)
    check_not_an_input(path, inputs, flag, replaces_directory=kind.directory)
    exists = path.exists() or path.is_symlink()
    if exists and not kind.directory and path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; name the file to write.")
    if exists and kind.directory and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not {kind.noun}, so it is never replaced; remove it yourself "
                          f"or choose another {flag}.")
    parent = path.parent if path.parent != Path("") else Path(".")
    if create_parents and not parent.exists():
        holder = nearest_existing(parent)
        if not holder.is_dir():
            raise OutputError(f"{flag} {path}: {holder} is a file, not a directory; choose another output.")
        check_writable_directory(holder, flag, path)
    else:
        check_writable_directory(parent, flag, path)
    if exists:
        if not overwrite:
            raise OutputError(f"{path} exists; choose another {flag} or add --overwrite to replace it.")
        if not kind.recognise(path):
            raise OutputError(f"{path} is not {kind.noun}, so --overwrite does not replace it; remove it yourself "
                              f"or choose another {flag}.")
    return path


def remove_output(path: Path) -> None:
    """Remove an output that :func:`check_output` allowed to be replaced (a file, a link or a directory)."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- atomic files ------------------------------------------------------------------------------------------------


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``): setting it to
    read it, the only portable way, races with other threads creating files."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a new file gets from ``open()``: 0666 less the umask (mkstemp's temporary files are 0600)."""
    return 0o666 & ~umask()


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some file systems cannot open or sync a directory, which costs only durability."""
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write (and check) the file at; when the block ends without
    an exception the file is synced, given the umask's mode and renamed over ``path``. On an exception nothing is
    left but the old file, if there was one. A failure of the disk becomes an OutputError with one sentence."""
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise OutputError(f"{path} cannot be written ({_reason(error)}).") from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fchmod(handle, new_file_mode())  # mkstemp's files are private; an output is not
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except OSError as error:
        raise OutputError(f"{path} could not be written ({_reason(error)}); nothing was left half-written. "
                          "Free space or choose another output.") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, by :func:`atomic_path`'s rules."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        yield file


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as file:
        file.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    write_bytes(path, text.encode("utf-8"))


# --- recognisers shared by several tools -------------------------------------------------------------------------


def first_line(path: Path, limit: int = 4096) -> str:
    """The first line of a text file ('' for an unreadable or binary one)."""
    try:
        with open(path, "rb") as file:
            head = file.read(limit)
        return head.decode("utf-8").splitlines()[0] if head else ""
    except (OSError, UnicodeDecodeError, IndexError):
        return ""


def text_starting_with(prefix: str) -> Callable[[Path], bool]:
    """A recogniser of the text files whose first line starts with ``prefix`` (reports that sign themselves)."""
    return lambda path: path.is_file() and first_line(path).startswith(prefix)
