"""One writer per workdir: a lock file held for the duration of a run.

``<workdir>/.lock`` is locked with ``flock``, which the kernel releases when
the holding process ends in any way (``kill -9`` included), so a lock can
never outlive its holder on the host where it was taken. The file also holds
the holder's PID and host, for the message a second run prints. A clean exit
empties the file; a non-empty file whose ``flock`` is free was left by a
holder that died, and is taken over with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from jvae.base import JvaeError

__all__ = ["LockError", "WorkdirLock"]

LOCK_NAME = ".lock"


class LockError(JvaeError):
    """The workdir cannot be locked: another run holds it, or it cannot be written."""


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(
        since, (int, float)) else ""
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    if not raw.strip():
        return {}
    try:
        holder = json.loads(raw)
        return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}
    except ValueError:
        return {"pid": "?", "host": "?"}


class WorkdirLock:
    """Exclusive lock on a workdir, as a context manager.

    Args:
      workdir: the run's directory (created if missing).

    Raises (on enter):
      LockError: another live process holds the lock (the message names its
        PID and host), or the workdir cannot be created or written.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LockError(f"cannot write to workdir {self.workdir} ({e.strerror or e}); "
                            "choose a writable --workdir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise LockError(f"cannot lock workdir {self.workdir} ({e.strerror}); "
                                "choose another --workdir") from None
            raise LockError(f"workdir {self.workdir} is in use by {_describe(holder)}; wait "
                            "for that run to end or use another --workdir") from None
        stale = _read_holder(fd)
        if stale:
            print(f"warning: taking over the lock of {self.workdir} left by "
                  f"{_describe(stale)}, which is no longer running", file=sys.stderr, flush=True)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise LockError(f"cannot write to workdir {self.workdir} ({e.strerror}); "
                            "free some space or choose another --workdir") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Empties the lock file (a clean exit) and releases the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # the kernel lock below is what matters
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
