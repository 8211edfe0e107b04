"""Train a VAE: ``jvae train --dataset=mnist`` (also ``python -m jvae.train``).

The front door of the application's training. The command parses flags into
a :class:`Config` and calls :func:`train_and_evaluate`; everything it does is
importable. Behind this module:

* :func:`train_and_evaluate` (:mod:`jvae.app.trainer`): a run in a working
  directory, resumed from its newest checkpoint;
* :class:`Config` and :func:`make_config` (:mod:`jvae.app.config`): the
  frozen settings a JSON/TOML file and flags override;
* :class:`Hook` and :func:`watch_hooks` (:mod:`jvae.app.hooks`): what
  observes a run (the live page, TensorBoard);
* :func:`main` (:mod:`jvae.app.modes.train`): the command.

A run's working directory holds::

    config.json        the settings the run was started with
    metrics.jsonl      one JSON object per evaluation
    images/            samples_epochNNN.png and reconstructions_epochNNN.png
    audio/             (audio data) samples_/reconstructions_epochNNN.wav, waveforms PNG
    data.json          what the run trained on (a folder's settings); classes.json: labels
    checkpoints/       orbax checkpoints: each epoch's end, and within epochs
                       (``--checkpoint-every``); the newest few are kept
    .lock              held while a run trains here (one writer per workdir)

Running again with the same ``--workdir`` resumes from the newest checkpoint
that reads back, at the batch after it. Exit status: 0 done, 2 bad input
(nothing written), 3 failed mid-run (divergence, a failed save: the last
good checkpoint is kept), 130/143 stopped by SIGINT/SIGTERM after saving.
"""

import sys

from jvae.app.config import Config, make_config
from jvae.app.hooks import Hook, watch_hooks
from jvae.app.modes.train import MODE, default_workdir, main
from jvae.app.run_guard import Divergence
from jvae.app.trainer import Stopped, train_and_evaluate

__all__ = ["Config", "Divergence", "Hook", "MODE", "Stopped", "default_workdir", "main",
           "make_config", "train_and_evaluate", "watch_hooks"]

if __name__ == "__main__":
    sys.exit(main())
