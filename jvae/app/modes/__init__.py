"""The ``jvae`` command's modes, one module each; :mod:`jvae.app.cli` dispatches to them.

* :mod:`~jvae.app.modes.train`: ``train`` (also ``python -m jvae.train``).
* :mod:`~jvae.app.modes.evaluate`: ``evaluate``, the report of a run's checkpoint.
* :mod:`~jvae.app.modes.inference`: ``encode``, ``decode``, ``reconstruct``, ``sample``,
  ``interpolate``, ``traverse``.
* :mod:`~jvae.app.modes.memory`: ``memory``, the largest batch that fits.
* :mod:`~jvae.app.modes.serve`: ``serve``, the live page of a run.
* :mod:`~jvae.app.modes.weights`: ``import-weights`` and ``export-weights``.
* :mod:`~jvae.app.modes.pretrained`: ``weights``, the local store of the pretrained
  networks the metrics and the perceptual loss use (LPIPS, the FID Inception).

Each module's ``MODE`` (or ``MODES``) is its :class:`~jvae.app.flags.Mode` and
its other names are its library (``evaluate.evaluate_run``,
``memory.estimate_max_batch_size``, ``weights.import_diffusers``, ...): the
modes' names repeat from module to module, so the package exports the modules.
"""

from jvae.app.modes import evaluate, inference, memory, pretrained, serve, train, weights

__all__ = ["evaluate", "inference", "memory", "pretrained", "serve", "train", "weights"]
