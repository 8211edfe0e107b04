"""The ``jvae`` command: ``jvae <mode> [flags]`` (also ``python -m jvae <mode>``).

Every mode loads what it needs through the library (:mod:`jvae.app.runs`,
:mod:`jvae.training.experiment`, :mod:`jvae.training.program`); this module only dispatches.
``jvae <mode> --help`` describes each flag of a mode.
"""

from __future__ import annotations

import sys
from typing import Sequence

from jvae.app.flags import Mode, run_mode
from jvae.app.modes import evaluate, memory, pretrained, serve, train, weights
from jvae.app.modes import inference as modes

__all__ = ["MODES", "main"]

# The modes in the order ``jvae --help`` lists them.
MODES: dict[str, Mode] = {m.name: m for m in (train.MODE, evaluate.MODE, *modes.MODES,
                                              memory.MODE, serve.MODE, weights.IMPORT_MODE,
                                              weights.EXPORT_MODE, pretrained.MODE)}


def _usage() -> str:
    width = max(map(len, MODES))
    lines = [f"  {name.ljust(width)}  {mode.summary}" for name, mode in MODES.items()]
    return ("usage: jvae <mode> [flags]   (jvae <mode> --help describes a mode's flags)\n\n"
            "modes:\n" + "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jvae`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in MODES:
        print(f"jvae: error: unknown mode {name!r}; choose one of {', '.join(MODES)} "
              "(see jvae --help)", file=sys.stderr)
        return 2
    return run_mode(MODES[name], rest, prog=f"jvae {name}")


if __name__ == "__main__":
    sys.exit(main())
