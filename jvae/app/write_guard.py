"""What a command may write: never a run's own files, and nothing at all when it refuses.

A *run directory* is a folder ``jvae train`` (or ``jvae import-weights``) made:
one holding a ``config.json`` of jvae settings, ``metrics.jsonl``,
``diffusers.json`` or ``checkpoints/`` with checkpoints in it. Its
entries (:data:`RUN_ENTRIES`) belong to the run: every later mode reads them,
so a command that overwrote ``config.json`` with something else would break
each of them. A mode's ``--output`` is therefore checked before the mode
reads or computes anything:

* :func:`check_output_file`: a file may be written beside a run's entries
  (``WORKDIR/samples.png``, ``evaluate``'s ``WORKDIR/eval_k5000.json``), never
  over or inside one (``WORKDIR/config.json``, ``WORKDIR/images/...``);
* :func:`check_output_folder`: a folder of outputs may not be a run
  directory, nor lie inside one of a run's entries;
* both: the path can be made (no file where a folder is needed) and written
  (a read-only folder), so a command fails here, with exit status 2, instead
  of after minutes of work.

A refused command writes nothing: the checks create no folder, and the modes
create their outputs' folders only when they write (:func:`make_parents`).
A write that fails even so (a full disk) raises :class:`WriteFailed`, exit
status 3, through :func:`writing`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

from jvae.app.config import Config
from jvae.app.run_guard import RunFailed
from jvae.base import JvaeError

__all__ = ["OutputError", "WriteFailed", "RUN_ENTRIES", "is_run_dir", "run_containing",
           "check_output_file", "check_output_folder", "check_workdir", "make_parents",
           "writing"]

# Everything a run directory holds that modes read or a resumed run continues.
RUN_ENTRIES = frozenset({"config.json", "data.json", "classes.json", "metrics.jsonl",
                         "diffusers.json", ".lock", "checkpoints", "checkpoints.unreadable",
                         "images", "audio", "tb", "fid", "samplers"})
# Files only a run has; a config.json alone is as likely diffusers' or another tool's,
# and data.json or .lock too common a name to tell.
_MARKERS = ("metrics.jsonl", "diffusers.json")
_SETTINGS = frozenset(f.name for f in dataclasses.fields(Config))
# A run's config.json is a few KiB; a larger file is read no further.
_CONFIG_BYTES = 1 << 20


class OutputError(JvaeError):
    """An output that would overwrite a run's files, or that cannot be written (exit 2)."""


class WriteFailed(RunFailed):
    """An output passed its checks but could not be written (a full disk; exit 3)."""


def _holds_settings(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` of jvae settings."""
    try:
        if path.stat().st_size > _CONFIG_BYTES:
            return False
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(value, dict) and bool(value) and set(value) <= _SETTINGS


def _holds_steps(path: Path) -> bool:
    """Whether ``path`` is a folder of orbax checkpoints named by their steps."""
    return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a run (see the module's docstring)."""
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        return (any((path / name).is_file() for name in _MARKERS)
                or _holds_steps(path / "checkpoints")
                or _holds_settings(path / "config.json"))
    except OSError:  # unreadable: not a run this command could damage either
        return False


def run_containing(path: str | os.PathLike) -> Path | None:
    """The nearest run directory that is ``path`` or holds it, or None."""
    path = _absolute(path)
    return next((p for p in (path, *path.parents) if is_run_dir(p)), None)


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute with symbolic links followed, as writes will follow them."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _refuse_run_entry(path: Path, run: Path, flag: str) -> None:
    """Refuses ``path`` (inside ``run``) when it lies in one of the run's entries."""
    entry = path.relative_to(run).parts[0]
    if entry in RUN_ENTRIES:
        what = f"is {entry}" if path == run / entry else f"lies in {entry}/"
        raise OutputError(f"{flag} {path} {what} of the run in {run}; choose a path outside "
                          f"the run's files (a new name beside them, or another folder)")


def _refuse_run(path: Path, flag: str) -> None:
    """Refuses a ``path`` that is a run directory or lies in one of a run's entries."""
    run = run_containing(path)
    if run is None:
        return
    if path == run:
        raise OutputError(f"{flag} {path} is a run directory (its config.json, checkpoints and "
                          "metrics would be mixed with or replaced by this output); choose a "
                          "new folder outside it")
    _refuse_run_entry(path, run, flag)


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if os.path.lexists(p))


def _writable(path: Path, flag: str, *, folder: bool) -> None:
    """Refuses a ``path`` that cannot be created or written by this process."""
    try:
        exists = path.exists()
        if exists and path.is_dir() != folder:
            kind, want = ("a file", "folder") if folder else ("a folder", "file")
            raise OutputError(f"{flag} {path} is {kind}; name a {want} to write")
        # The folder whose entries are created or replaced.
        base = path if exists and folder else _nearest_existing(path.parent)
    except OSError as e:  # a name too long, a loop of links
        raise OutputError(f"{flag} {path} is not a usable path ({e.strerror or e})") from None
    if not base.is_dir():
        raise OutputError(f"{flag} {path} cannot be made: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path} cannot be written: {base} is read-only; choose a "
                          "writable place")
    if exists and not folder and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path} exists and is read-only; choose another file")


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Checks that a file may be written at ``path``; writes nothing.

    Returns:
      ``path`` as given (a :class:`~pathlib.Path`).

    Raises:
      OutputError: ``path`` is or lies in one of a run's entries, is a folder,
        lies under a file, or is not writable.
    """
    absolute = _absolute(path)
    _refuse_run(absolute, flag)
    _writable(absolute, flag, folder=False)
    return Path(path)


def check_output_folder(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Checks that a folder of outputs may be made or filled at ``path``; writes nothing.

    The files a mode then writes into it are checked with
    :func:`check_output_file` (a folder may hold a run further down).

    Raises:
      OutputError: ``path`` is a run directory or lies in one of a run's
        entries, is a file, lies under a file, or is not writable.
    """
    absolute = _absolute(path)
    _refuse_run(absolute, flag)
    _writable(absolute, flag, folder=True)
    return Path(path)


def check_workdir(path: str | os.PathLike, flag: str = "--workdir") -> None:
    """Refuses a new run's directory inside another run's entries (``W/checkpoints/new``).

    The run directory itself may exist (a resumed run); nothing is written.
    """
    absolute = _absolute(path)
    run = run_containing(absolute.parent)
    if run is not None:
        _refuse_run_entry(absolute, run, flag)


def make_parents(path: str | os.PathLike, flag: str = "--output") -> None:
    """Creates the folders ``path`` is written into (at write time, after every check)."""
    with writing(path, flag):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def writing(path: str | os.PathLike, flag: str = "--output") -> Iterator[None]:
    """Turns an ``OSError`` of the writes in the block into :class:`WriteFailed` (one line)."""
    try:
        yield
    except OSError as e:
        raise WriteFailed(f"writing {path} failed ({e.strerror or e}); free some space or "
                          f"choose another {flag}, then run the command again") from None
