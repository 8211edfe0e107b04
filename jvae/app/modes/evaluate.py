"""Evaluate a trained run on its test split: ``jvae evaluate --workdir DIR``.

Restores the run's ``config.json`` and newest checkpoint and reports, as JSON:

* ``neg_elbo``, ``recon``, ``kl`` and the objective's other terms (means over
  the whole test split, nats per example);
* ``nll_bound``: minus the importance-weighted bound with ``k`` samples
  (Burda et al., 2015, arXiv:1509.00519),

      log p(x) >= log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

  evaluated in chunks of samples with a running log-sum-exp, so k = 5000 needs
  the memory of one chunk; optionally on the first ``--num-test-images`` test
  images (``n_test_images`` in the output says how many);
* ``active_units``: latent dimensions whose posterior mean varies across the
  test set, ``Cov_x(E_q[z_u|x]) > 0.01`` (Burda et al., 2015, Section 5.2);
* for a ``cvae``, the bound is on the conditional ``log p(x|y)``, and
  ``conditional_accuracy``: the share of class-conditional prior samples that
  a classifier trained on the training split assigns to the requested class
  (``classifier_test_accuracy`` beside it); for a ``vq`` model, codebook usage;
  for the discretized logistic likelihood, bits/dim;
* for images, the quality of the reconstructions (:mod:`jvae.metrics.quality`):
  ``psnr``, ``ssim``, ``ms_ssim``, ``hf_ratio`` over the whole split, ``lpips``
  when its weights are installed, and, with the Inception weights, ``fid_recon``
  and ``fid_samples`` on the first ``--fid-images`` images (``fid_images`` in
  the output says how many). A run that keeps a parameter average is evaluated
  with it.
* for a dataset with known factors (``dsprites``), ``disentanglement``: the
  BetaVAE and FactorVAE scores, MIG, SAP and DCI of the encoder mean
  (:mod:`jvae.metrics.disentanglement`) on combinations drawn from ``--seed``,
  as many as ``--factor-points``, ``--dci-points`` and ``--score-points`` say.

An autoencoder with a deterministic code (``ae``, ``wae``, ``rae``) has no likelihood
bound: its reconstruction error and its regularizers are reported, no ``nll_bound``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jvae.app import flags
from jvae.app.factors import disentanglement_report, ground_truth
from jvae.app.runs import restore_run
from jvae.app.write_guard import check_output_file, make_parents, writing
from jvae.base import Array, ConfigError
from jvae.devices.parallel import data_mesh
from jvae.distributions.likelihoods import bits_per_dim
from jvae.distributions.vq import code_indices, codebook_usage
from jvae.evaluation import (
    active_units,
    conditional_accuracy,
    fit_classifier,
    iwae_over_split,
    make_iwae_evaluator,
)
from jvae.inference import make_inference
from jvae.metrics.quality import quality_evaluator
from jvae.model import VAE
from jvae.training.ema import averaged_params
from jvae.training.program import evaluate_split
from jvae.training.state import make_eval_step

__all__ = ["evaluate_run", "MODE", "main"]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def evaluate_run(workdir: str | Path, *, iw_samples: int = 5000, data_dir: str | None = None,
                 num_test_images: int | None = None, batch_size: int = 100,
                 chunk_size: int = 250, seed: int = 0, fid_images: int = 2000,
                 factor_points: int = 10_000, dci_points: int = 1_000, score_points: int = 1_000,
                 score_batch: int = 64) -> dict[str, Any]:
    """Evaluates a run's newest checkpoint on its test split.

    Args:
      workdir: the run directory.
      iw_samples: ``k`` of the importance-weighted bound.
      data_dir: overrides the saved data directory.
      num_test_images: evaluate the bound on the first this-many test images
        (None: all). The ELBO terms always use the whole split.
      batch_size: images per bound evaluation (rounded up to the device count).
      chunk_size: posterior samples per decoder call.
      seed: seed of the evaluation's samples.
      fid_images: images (the test split's first) and samples the FIDs are
        computed on when the Inception weights are installed (0: no FID).
      factor_points, dci_points, score_points, score_batch: sample sizes of the
        disentanglement metrics of a dataset with factors (see
        :func:`jvae.metrics.disentanglement.disentanglement_metrics`);
        ``factor_points=0`` skips them.

    Returns:
      The JSON-serializable report.
    """
    t_start = time.perf_counter()
    run = restore_run(workdir, data_dir=data_dir)
    cfg, state, meta, test = run.cfg, run.state, run.meta, run.test
    params = averaged_params(state)
    vae, objective, cond_key = run.experiment.vae, run.experiment.objective, run.experiment.cond_key
    # At most the devices there are: a run trained on more is evaluated on those at hand.
    mesh = data_mesh(min(cfg.num_devices, jax.device_count()) or None)
    key_elbo, key_iw = jax.random.split(jax.random.key(seed))
    n_all = len(test["image"])
    report: dict[str, Any] = {
        "workdir": str(workdir), "model": cfg.model, "posterior": vae.posterior.name,
        "likelihood": cfg.likelihood, "epoch": int(meta.get("epoch", 0)),
        "step": int(state.step), "split": "test", "n_eval_images": n_all,
        "conditional": cond_key is not None}

    eval_bs = _round_up(min(cfg.eval_batch_size, n_all), mesh.size)
    scores = evaluate_split(make_eval_step(objective, mesh=mesh), params, test, eval_bs, key_elbo,
                      mesh, state.loss_state)
    report.update({k: v for k, v in scores.items() if k != "loss"})

    # Deterministic codes over the split: active units, VQ usage.
    encode = jax.jit(lambda p, x, c: vae.encode(p, x, c))
    codes, indices = [], []
    for i in range(0, n_all, eval_bs):
        x = jnp.asarray(test["image"][i:i + eval_bs])
        c = None if cond_key is None else jnp.asarray(test[cond_key][i:i + eval_bs])
        post = encode(params, x, c)
        codes.append(np.asarray(vae.posterior.mean(post)))
        if vae.posterior.name == "vq":
            indices.append(np.asarray(code_indices(post["z_e"], post["shared"]["codebook"])))
    report["active_units"] = active_units(np.concatenate(codes))
    report["latent_size"] = int(np.prod(vae.latent_shape))
    if indices:
        report["codebook"] = codebook_usage(jnp.asarray(np.concatenate(indices)), cfg.vq_codes)

    if vae.posterior.name != "point":
        n = n_all if num_test_images is None else min(num_test_images, n_all)
        subset = {k: v[:n] for k, v in test.items()}
        evaluator = make_iwae_evaluator(vae, iw_samples, chunk_size=chunk_size,
                                        cond_key=cond_key, mesh=mesh)
        t0 = time.perf_counter()
        iw = iwae_over_split(evaluator, params, subset, _round_up(min(batch_size, n),
                                                                        mesh.size),
                             key_iw, mesh)
        report.update({"iw_samples": iw_samples, "n_test_images": n,
                       "nll_bound": -iw["log_likelihood"], "neg_elbo_subset": -iw["elbo"],
                       "iwae_wall_s": time.perf_counter() - t0})
    if cond_key is not None:
        report.update(_conditional_report(vae, params, run.train, test, cond_key,
                                          jax.random.fold_in(jax.random.key(seed), 2), seed))
    if cfg.likelihood == "logistic_mixture":
        dims = int(np.prod(test["image"].shape[1:]))
        if "neg_elbo" in report:  # a deterministic code (ae, wae, rae) has no bound
            report["bits_per_dim_elbo"] = bits_per_dim(report["neg_elbo"], dims)
        if "nll_bound" in report:
            report["bits_per_dim_bound"] = bits_per_dim(report["nll_bound"], dims)
    quality = quality_evaluator(vae, test, batch_size=eval_bs, mesh=mesh, cond_key=cond_key,
                                fid_images=fid_images, key=jax.random.fold_in(jax.random.key(seed), 3),
                                stats_dir=Path(workdir) / "fid")
    if quality is not None:
        report.update(quality(params))
        if "fid_recon" in report:
            report["fid_images"] = min(fid_images, n_all)
    truth = ground_truth(cfg)
    if truth is not None and factor_points > 0:
        report["disentanglement"] = disentanglement_report(
            vae, params, truth, seed=seed, factor_points=factor_points, dci_points=dci_points,
            score_points=score_points, score_batch=score_batch, image_size=cfg.image_size,
            channels=cfg.channels or None,
            num_classes=None if cond_key is None else run.experiment.data_spec.num_classes)
    report["wall_s"] = time.perf_counter() - t_start
    return report


def _conditional_report(vae: VAE, params, train, test, cond_key: str, key: Array,
                        seed: int) -> dict[str, float]:
    """``conditional_accuracy`` of a conditional run, judged by a classifier of its data."""
    classifier = fit_classifier(train["image"], train["label"], seed=seed)
    num_classes = train[cond_key].shape[-1]
    inference = make_inference(vae)

    def sampler(key, cond):
        return inference.sample(params, key, cond.shape[0], cond)[1]

    flat = test["image"].reshape(len(test["image"]), -1)
    return {"conditional_accuracy": conditional_accuracy(sampler, classifier, num_classes, key),
            "classifier_test_accuracy": float(classifier.score(flat, test["label"]))}


def _add_arguments(parser) -> None:
    flags.add_workdir_flag(parser, required=True)
    parser.add_argument("--iw-samples", type=int, default=5000, metavar="K",
                        help="posterior samples k of the IWAE bound (int; default: 5000)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="read the test split from this folder instead of the run's saved "
                             "data directory (default: the saved one)")
    parser.add_argument("--num-test-images", type=int, default=None, metavar="N",
                        help="evaluate the bound on the first N test images only; the ELBO "
                             "terms always cover the whole split (int; default: all)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N",
                        help="images per bound batch, rounded up to the device count "
                             "(int; default: 100)")
    parser.add_argument("--chunk-size", type=int, default=250, metavar="N",
                        help="posterior samples per decoder call; bounds memory, not the "
                             "result (int; default: 250)")
    parser.add_argument("--fid-images", type=int, default=2000, metavar="N",
                        help="test images, and as many samples, scored by FID when the Inception "
                             "weights are installed (jvae weights fetch inception); 0: no FID "
                             "(int; default: 2000)")
    parser.add_argument("--factor-points", type=int, default=10_000, metavar="N",
                        help="a dataset with known factors (dsprites): factor combinations MIG "
                             "is computed on and SAP trained on (tested on N/2 more), and the "
                             "FactorVAE score's variances are estimated on; 0: no "
                             "disentanglement metrics (int; default: 10000)")
    parser.add_argument("--dci-points", type=int, default=1_000, metavar="N",
                        help="combinations DCI's boosted trees are trained on (tested on N/2 "
                             "more); about a minute per 1000 on a CPU (int; default: 1000)")
    parser.add_argument("--score-points", type=int, default=1_000, metavar="N",
                        help="training points of the BetaVAE and FactorVAE scores, each a "
                             "batch of --score-batch combinations (evaluated on N/2 more) "
                             "(int; default: 1000)")
    parser.add_argument("--score-batch", type=int, default=64, metavar="N",
                        help="combinations per point of the BetaVAE and FactorVAE scores "
                             "(int; default: 64)")
    parser.add_argument("--seed", type=flags.seed_int, default=0,
                        help="seed of the evaluation's samples (int; default: 0)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="JSON file to write (default: WORKDIR/eval_k<K>.json)")


def _run(args) -> int:
    """Prints the report as one JSON object and writes it to a file."""
    if args.fid_images < 0:
        raise ConfigError(f"--fid-images must be >= 0, got {args.fid_images}")
    for name in ("iw_samples", "batch_size", "chunk_size", "num_test_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    # Fewer points leave most factor values unseen by the classifiers.
    for name, least in (("factor_points", 100), ("dci_points", 100), ("score_points", 10),
                        ("score_batch", 2)):
        value = getattr(args, name)
        if value < least and not (name == "factor_points" and value == 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {least}"
                              f"{' (0: none)' if name == 'factor_points' else ''}, got {value}")
    # Checked before the evaluation's minutes: a read-only workdir or a bad path is bad input.
    out = (check_output_file(args.output) if args.output else check_output_file(
        Path(args.workdir) / f"eval_k{args.iw_samples}.json", "the default --output"))
    report = evaluate_run(args.workdir, iw_samples=args.iw_samples, data_dir=args.data_dir,
                          num_test_images=args.num_test_images, batch_size=args.batch_size,
                          chunk_size=args.chunk_size, seed=args.seed, fid_images=args.fid_images,
                          factor_points=args.factor_points, dci_points=args.dci_points,
                          score_points=args.score_points, score_batch=args.score_batch)
    text = json.dumps(report)
    make_parents(out)
    with writing(out):
        out.write_text(text + "\n")
    print(text, flush=True)
    return 0


MODE = flags.Mode("evaluate", "Evaluate a run's newest checkpoint on its test split: -ELBO, "
                  "the k-sample IWAE bound, active units, a cvae's conditional accuracy, image "
                  "quality (PSNR, SSIM, MS-SSIM, LPIPS, FID), and on dsprites the "
                  "disentanglement metrics (BetaVAE, FactorVAE, MIG, SAP, DCI).",
                  _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.app.modes.evaluate``: the evaluate mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="python -m jvae.app.modes.evaluate")


if __name__ == "__main__":
    sys.exit(main())
