"""Open the live page of a finished or running run: ``jvae serve --workdir DIR``.

The page is the one training serves (:mod:`jvae.app.dashboard`), rebuilt from the
run's newest checkpoint and ``metrics.jsonl``; new checkpoints of a run still
training are picked up as they appear. Ctrl-C stops it.
"""

from __future__ import annotations

import sys
from typing import Sequence

from jvae.app import flags

__all__ = ["MODE", "main"]


def _add_arguments(parser) -> None:
    flags.add_workdir_flag(parser, required=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=2998,
                        help="port to bind; 0 picks a free one (default: 2998)")
    parser.add_argument("--data-dir", default=None,
                        help="the run's data folder, if it moved since training")


def _run(args) -> int:
    from jvae.app.dashboard import serve
    serve(args.workdir, args.host, args.port, data_dir=args.data_dir)
    return 0


MODE = flags.Mode("serve", "Serve the live page of a finished or running run from its "
                  "checkpoints.", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``jvae-serve``: the serve mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="jvae serve")


if __name__ == "__main__":
    sys.exit(main())
