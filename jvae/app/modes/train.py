"""The ``jvae train`` mode (also ``python -m jvae.train``): flags in, one call of
:func:`~jvae.app.trainer.train_and_evaluate`.

Without ``--config``, a workdir's saved settings are the base when resuming,
and flags change only what they name; each process of a multi-process run
joins the job before training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from jvae.app import flags
from jvae.app.config import Config, config_to_dict, make_config
from jvae.app.hooks import watch_hooks
from jvae.app.runs import data_options, saved_config
from jvae.app.trainer import train_and_evaluate
from jvae.app.write_guard import check_workdir
from jvae.devices import distributed

__all__ = ["default_workdir", "MODE", "main"]


def default_workdir(cfg: Config) -> str:
    """``runs/<dataset>``, or ``runs/<folder name>`` for a ``--data-source`` folder."""
    source = data_options(cfg).get("data_source")
    return f"runs/{Path(source).resolve().name if source else cfg.dataset}"


def _add_arguments(parser) -> None:
    flags.add_workdir_flag(parser, required=False,
                           help="output directory; an existing run there is resumed "
                                "(default: runs/DATASET)")
    flags.add_config_flags(parser)


# How one process joins a multi-process job: each launch names its own.
_LAUNCH_SETTINGS = ("coordinator_address", "num_processes", "process_id")


def _run(args) -> int:
    cfg, workdir = flags.config_from_args(args)
    workdir = workdir or default_workdir(cfg)
    check_workdir(workdir)  # not inside another run's checkpoints/, images/, ...
    if not hasattr(args, "config") and (Path(workdir) / "config.json").is_file():
        # Resuming: the run's own settings are the base and flags change only what
        # they name, so `--workdir W` alone continues W where it stopped; a flag
        # that changes the model is still refused by check_resumable.
        saved = config_to_dict(saved_config(workdir))
        for name in _LAUNCH_SETTINGS:
            saved.pop(name, None)
        cfg = make_config(saved, flags.recipe_of(args), flags.given_settings(args))
    distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    train_and_evaluate(cfg, workdir, hooks=watch_hooks(cfg))
    return 0


MODE = flags.Mode("train", "Train a VAE, evaluating after every epoch; resumes a run "
                  "found in --workdir.", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.train``: the train mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="python -m jvae.train")


if __name__ == "__main__":
    sys.exit(main())
