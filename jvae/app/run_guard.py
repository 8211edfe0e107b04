"""What keeps a long run safe: a checkpoint schedule, signal handling, exit codes.

* :class:`CheckpointSchedule`: ``--checkpoint-every 500`` (steps) or ``10m``
  (time: ``s``, ``m``, ``h``), on top of the checkpoint at every epoch's end.
* :class:`StopSignals`: SIGINT (Ctrl-C) and SIGTERM (a scheduler's notice
  before preemption) only set a flag; the train loop saves a checkpoint of
  the current step at its next step or chunk boundary and exits
  ``128 + signal`` (130, 143). A second Ctrl-C stops at once.
* Exit codes: 0 done, 2 bad input (nothing was trained, nothing is lost),
  3 the run failed mid-way (divergence, a failed save), 130/143 stopped by a
  signal after saving. :class:`RunFailed` carries the code and a one-line message.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from typing import Callable

from jvae.base import JvaeError

__all__ = ["CheckpointSchedule", "StopSignals", "RunFailed", "Divergence", "SaveFailed",
           "parse_interval", "EXIT_BAD_INPUT", "EXIT_RUN_FAILED"]

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class RunFailed(JvaeError):
    """A run that cannot continue; ``exit_code`` is the process status to end with."""

    exit_code = EXIT_RUN_FAILED


class Divergence(RunFailed):
    """Training diverged (too many skipped steps, or a non-finite test loss)."""


class SaveFailed(RunFailed):
    """A checkpoint or metrics file could not be written (a full disk, a lost mount)."""


def parse_interval(text: str) -> tuple[int | None, float | None]:
    """Parses ``--checkpoint-every``: ``"500"`` steps, ``"10m"`` time, ``"epoch"`` neither.

    Returns:
      ``(steps, seconds)``, at most one of them set.

    Raises:
      ValueError: anything else (the message shows the accepted forms).
    """
    text = str(text).strip().lower()
    if text == "epoch":
        return None, None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
    if m is None or float(m.group(1)) <= 0 or (not m.group(2) and "." in m.group(1)):
        raise ValueError(f"checkpoint_every={text!r} is not a step count (500), a duration "
                         "(90s, 10m, 2h) or 'epoch'")
    if not m.group(2):
        return int(m.group(1)), None
    return None, float(m.group(1)) * _UNITS[m.group(2)]


class CheckpointSchedule:
    """When to save mid-epoch: every ``steps`` steps or ``seconds`` seconds since the last save.

    Args:
      every: the ``--checkpoint-every`` text (see :func:`parse_interval`).
      clock: time source (``time.monotonic``; tests pass their own).
    """

    def __init__(self, every: str, clock: Callable[[], float] = time.monotonic):
        self.steps, self.seconds = parse_interval(every)
        self._clock = clock
        self._last_step = 0
        self._last_time = clock()

    def saved(self, step: int) -> None:
        """Records a save at global step ``step`` (epoch ends included)."""
        self._last_step, self._last_time = step, self._clock()

    def due(self, step: int) -> bool:
        """Whether a mid-epoch checkpoint is due at global step ``step``."""
        if self.steps is not None:
            return step - self._last_step >= self.steps
        if self.seconds is not None:
            return self._clock() - self._last_time >= self.seconds
        return False


class StopSignals:
    """Catches SIGINT and SIGTERM for the duration of a ``with`` block.

    ``received`` is the first signal's number (None until one arrives);
    ``exit_code`` is ``128 + received``. Outside the main thread (where
    Python cannot install handlers) nothing is caught.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or 0)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "no signal"

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = self.received or signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
