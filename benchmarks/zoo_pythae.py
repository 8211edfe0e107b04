"""The zoo side by side with Pythae: every family both libraries have, one recipe.

Recipe (Pythae's default MLP, so neither library's architecture is favoured):
encoder 784-512-z and decoder z-512-784 with ReLU, ``z = 16``, Adam 1e-3 with
betas (0.9, 0.99), batch 100, ``--epochs`` epochs over the 20,000 shared
MNIST training images, binarized afresh for every batch (dynamic
binarization), Bernoulli likelihood (Pythae's ``reconstruction_loss="bce"``).
The families without a likelihood (``ae``, ``wae``, ``rae_*``) use Pythae's
only loss, the squared error, and jvae's ``gaussian`` likelihood at scale
``1/sqrt(2)`` (the same loss up to a constant). Each family's own settings are
Pythae's defaults unless the row says otherwise, and jvae is given the same.

Both libraries see the same images: the training split as loaded by jvae and
the test split binarized once with jvae's fixed evaluation seed. Per family
and library one JSON row reports

* ``neg_elbo``: test -ELBO, nats, one posterior draw per image, over all 10,000
  test images (the families with a likelihood);
* ``nll``: the importance-sampled NLL with ``k = --iw-samples`` (1000) on the
  first ``--nll-images`` (1000) test images, jvae's ``jvae evaluate`` bound against
  Pythae's own ``get_nll``;
* ``test_mse``: squared error per image (summed over pixels) of the mean
  reconstruction, for every family;
* ``train_s``: wall time of training alone (jvae: the epochs' ``epoch_s``
  plus the train program's compile time; Pythae: its trainer's ``train()``
  call, after one untimed warm-up training).

Every (family, library) pair trains in a fresh process of its own, as a user
runs one library: in a process where PyTorch has trained, JAX's trace and
compile of the same program took 0.6 s longer (1.7 s against 1.1 s for ``ae``),
its thread pool still claiming the two cores.

Rows are appended to ``--out``; a (family, library, repeat) run already there
is skipped, so an interrupted comparison resumes::

    python -m benchmarks.zoo_pythae --out /tmp/zoo_pythae.jsonl

A speed comparison on a shared machine is better read from medians:
``--time-only --repeats 3`` times every pair three times, the two libraries in
turn, and ends with one ``zoo_pythae_time_median`` row per family (each
library's median ``train_s``, their ratio, and every run's time).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.zoo import DEFAULT_DATA_DIR

LATENT_DIM = 16
HIDDEN = 512
BATCH = 100
LR = 1e-3

RECIPE = {"dataset": "mnist", "batch_size": BATCH, "hidden": (HIDDEN,), "latent_dim": LATENT_DIM,
          "lr": LR, "likelihood": "bernoulli", "binarize": "dynamic", "activation": "relu",
          "net": "mlp"}
# The squared-error families: -log N(x; m, 1/2) = ||x - m||^2 + const, Pythae's sum of squares.
MSE_LIKELIHOOD = {"likelihood": "gaussian", "gaussian_scale": 1 / math.sqrt(2)}

# name -> (jvae settings, Pythae model class name, Pythae config, has a likelihood bound).
FAMILIES: dict[str, tuple[dict, str, dict, bool]] = {
    "vae": ({}, "VAE", {}, True),
    "beta_vae": ({"beta": 2.0}, "BetaVAE", {"beta": 2.0}, True),
    "iwae": ({"model": "iwae", "num_samples": 10}, "IWAE", {"number_samples": 10}, True),
    # M = 2 groups of K = 5 (Pythae's default 5 x 10 costs five IWAE-10 steps per step).
    "miwae": ({"model": "miwae", "num_samples": 5, "iw_groups": 2}, "MIWAE",
              {"number_samples": 5, "number_gradient_estimates": 2}, True),
    "piwae": ({"model": "piwae", "num_samples": 5, "iw_groups": 2}, "PIWAE",
              {"number_samples": 5, "number_gradient_estimates": 2}, True),
    "ciwae": ({"model": "ciwae", "num_samples": 10, "ciwae_beta": 0.5}, "CIWAE",
              {"number_samples": 10, "beta": 0.5}, True),
    "vamp": ({"model": "vamp", "vamp_components": 500}, "VAMP", {"number_components": 500}, True),
    "svae": ({"model": "svae"}, "SVAE", {}, True),
    "btcvae": ({"model": "btcvae", "tcvae_alpha": 1.0, "tcvae_beta": 6.0, "tcvae_gamma": 1.0,
                "tcvae_estimator": "mss"}, "BetaTCVAE",
               {"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "use_mss": True}, True),
    "factorvae": ({"model": "factorvae", "factorvae_gamma": 10.0}, "FactorVAE",
                  {"gamma": 10.0}, True),
    # Pythae's default lambda (1e-3, with alpha = 0) weights the MMD by alpha + lambda - 1 < 0;
    # both get the InfoVAE paper's lambda = 1000 instead.
    "infovae": ({"model": "infovae", "infovae_alpha": 0.0, "infovae_lambda": 1000.0,
                 "mmd_kernel": "imq", "mmd_scale": 1.0}, "INFOVAE_MMD",
                {"kernel_choice": "imq", "alpha": 0.0, "lbd": 1000.0, "kernel_bandwidth": 1.0},
                True),
    "ae": ({"model": "ae", **MSE_LIKELIHOOD}, "AE", {}, False),
    # The WAE paper's lambda = 10 for both (Pythae's default is 3e-2).
    "wae": ({"model": "wae", "wae_lambda": 10.0, "mmd_kernel": "imq", "mmd_scale": 1.0,
             **MSE_LIKELIHOOD}, "WAE_MMD",
            {"kernel_choice": "imq", "reg_weight": 10.0, "kernel_bandwidth": 1.0}, False),
    "rae_l2": ({"model": "rae", "rae_regularizer": "l2", "rae_beta": 1e-4,
                "rae_lambda": 1e-7, **MSE_LIKELIHOOD}, "RAE_L2",
               {"embedding_weight": 1e-4, "reg_weight": 1e-7}, False),
    "rae_gp": ({"model": "rae", "rae_regularizer": "gp", "rae_beta": 1e-4,
                "rae_lambda": 1e-7, **MSE_LIKELIHOOD}, "RAE_GP",
               {"embedding_weight": 1e-4, "reg_weight": 1e-7}, False),
}
# Families Pythae lacks: jvae alone, each compared with the reference README.md names.
# Burda et al. (2015)'s second architecture: 100-100 (h1: 100) - 50-50 (h2: 50), tanh.
TWO_LAYERS = {"hidden": (100, 100), "latent_dim": 100, "activation": "tanh",
              "stochastic_layers": 2}
JVAE_ONLY: dict[str, tuple[dict, None, dict, bool]] = {
    "dirichlet": ({"posterior": "dirichlet"}, None, {}, True),
    "flow_spline": ({"flow_layers": 4, "flow_coupling": "spline"}, None, {}, True),
    "cvae": ({"model": "cvae"}, None, {}, True),
    "vae_2layer": (TWO_LAYERS, None, {}, True),
    "iwae_2layer": ({"model": "iwae", "num_samples": 5, **TWO_LAYERS}, None, {}, True),
}
FAMILIES.update(JVAE_ONLY)


def _data(args):
    """The train split (float pixels) and the binarized test split jvae evaluates on."""
    from jvae.app.config import make_config
    from jvae.app.runs import load_data
    cfg = make_config(RECIPE, {"data_dir": str(args.data_dir), "seed": args.seed})
    train, test = load_data(cfg)
    return train["image"], test["image"]


def _pythae_model(name: str, input_dim):
    import pythae.models as pm
    _, cls_name, settings, bound = FAMILIES[name]
    config_cls = getattr(pm, f"{cls_name}Config", None) or getattr(pm, f"{cls_name}_Config")
    extra = {"reconstruction_loss": "bce"} if bound else {}
    config = config_cls(input_dim=input_dim, latent_dim=LATENT_DIM, **extra, **settings)
    return getattr(pm, cls_name)(config)


# Pythae's TrainingPipeline refuses any trainer but these for these models (an AssertionError):
# PIWAE's two bounds and RAE-L2's decay need an optimizer per network, FactorVAE's critic its own.
PYTHAE_TRAINER = {"piwae": "CoupledOptimizerTrainer", "rae_l2": "CoupledOptimizerTrainer",
                  "factorvae": "AdversarialTrainer"}


def _pythae_trainer_config(name: str, out: str, epochs: int, seed: int):
    import pythae.trainers as pt
    common = dict(output_dir=out, num_epochs=epochs, learning_rate=LR,
                  per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                  optimizer_cls="Adam", optimizer_params={"betas": (0.9, 0.99)}, seed=seed,
                  no_cuda=True, steps_saving=None)
    trainer = PYTHAE_TRAINER.get(name, "BaseTrainer")
    if trainer == "BaseTrainer":
        return pt.BaseTrainerConfig(**common)
    common = {k: v for k, v in common.items()
              if k not in ("learning_rate", "optimizer_cls", "optimizer_params")}
    adam = {"betas": (0.9, 0.99)}
    if trainer == "AdversarialTrainer":
        from jvae.terms.total_correlation import FACTORVAE_LR
        # The critic gets jvae's critic's Adam (the FactorVAE paper's lr 1e-4, betas 0.5, 0.9).
        return pt.AdversarialTrainerConfig(
            **common, autoencoder_learning_rate=LR, autoencoder_optimizer_cls="Adam",
            autoencoder_optimizer_params=adam, discriminator_learning_rate=FACTORVAE_LR,
            discriminator_optimizer_cls="Adam",
            discriminator_optimizer_params={"betas": (0.5, 0.9)})
    # RAE-L2 decays the decoder's weights through the decoder's own optimizer.
    decay = FAMILIES[name][2]["reg_weight"] if name == "rae_l2" else 0.0
    return pt.CoupledOptimizerTrainerConfig(
        **common, encoder_learning_rate=LR, decoder_learning_rate=LR,
        encoder_optimizer_cls="Adam", decoder_optimizer_cls="Adam",
        encoder_optimizer_params=adam,
        decoder_optimizer_params={**adam, "weight_decay": decay})


def _binarizing_dataset(images: np.ndarray):
    """Pythae's dataset, drawing fresh binary pixels every time an image is read."""
    import torch
    from pythae.data.datasets import BaseDataset, DatasetOutput

    class Binarized(BaseDataset):
        def __getitem__(self, index):
            x = self.data[index]
            return DatasetOutput(data=torch.bernoulli(x), labels=self.labels[index])

    data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return Binarized(data, torch.zeros(len(data)))


def _pythae_eval(name: str, model, test: np.ndarray, args) -> dict:
    """-ELBO (one draw), NLL by Pythae's ``get_nll`` and the reconstruction error."""
    import torch
    import torch.nn.functional as F
    model.eval()
    _, _, _, bound = FAMILIES[name]
    x_all = torch.from_numpy(np.ascontiguousarray(test.transpose(0, 3, 1, 2)))
    neg_elbo, sq = [], []
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for i in range(0, len(x_all), 500):
            x = x_all[i:i + 500]
            flat = x.reshape(len(x), -1)
            out = model.encoder(x)
            if name == "svae":
                loc = out.embedding / out.embedding.norm(dim=-1, keepdim=True)
                conc = F.softplus(out.log_concentration) + 1
                z = model._sample_von_mises(loc, conc)
                mean_z = loc
                kl = model._compute_kl(loc.shape[-1], conc)
            elif bound:
                mu, log_var = out.embedding, out.log_covariance
                z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
                mean_z = mu
                if name == "vamp":
                    # Pythae's _log_p_z leaves out -log(2 pi)/2 per dimension; so does log_q.
                    log_q = (-0.5 * (log_var + (z - mu) ** 2 / log_var.exp())).sum(-1)
                    kl = log_q - model._log_p_z(z)
                else:
                    kl = -0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=-1)
            else:
                mean_z = z = out.embedding
            if bound:
                recon = model.decoder(z)["reconstruction"].reshape(len(x), -1)
                rec = F.binary_cross_entropy(recon, flat, reduction="none").sum(-1)
                neg_elbo.append((rec + kl).numpy())
            mean = model.decoder(mean_z)["reconstruction"].reshape(len(x), -1)
            sq.append(((mean - flat) ** 2).sum(-1).numpy())
        row = {"test_mse": float(np.mean(np.concatenate(sq)))}
        if bound:
            row["neg_elbo"] = float(np.mean(np.concatenate(neg_elbo)))
            t0 = time.perf_counter()
            sub = x_all[:args.nll_images]
            row["nll"] = float(-model.get_nll(sub, n_samples=args.iw_samples,
                                              batch_size=min(args.iw_samples, 1000)))
            row["nll_s"] = round(time.perf_counter() - t0, 1)
    return row


def run_pythae(name: str, args, train: np.ndarray, test: np.ndarray, *,
               evaluate: bool = True) -> dict:
    import pythae.trainers as pt
    import torch
    torch.manual_seed(args.seed)
    model = _pythae_model(name, (1, 28, 28))
    with tempfile.TemporaryDirectory() as out:
        config = _pythae_trainer_config(name, out, args.epochs, args.seed)
        trainer_cls = getattr(pt, PYTHAE_TRAINER.get(name, "BaseTrainer"))
        trainer = trainer_cls(model=model, train_dataset=_binarizing_dataset(train),
                              training_config=config)
        t0 = time.perf_counter()
        try:
            trainer.train()
        except UnboundLocalError:
            # Pythae keeps a "best model" only once an epoch's loss drops below 1e10; a run
            # whose loss never does ends in this error.
            return {"library": "pythae", "train_s": round(time.perf_counter() - t0, 1),
                    "failed": "the training loss never fell below 1e10 (diverged); Pythae's "
                              "trainer then fails to save a model"}
        train_s = time.perf_counter() - t0
    row = {"library": "pythae", "train_s": round(train_s, 1), "trainer": trainer_cls.__name__,
           "torch_threads": torch.get_num_threads()}
    if evaluate:
        row.update(_pythae_eval(name, trainer.model, test, args))
    return row


def _jvae_mse(workdir: Path, test: np.ndarray) -> float:
    from jvae.app.runs import restore_run
    from jvae.inference import make_reconstructor
    from jvae.training import averaged_params
    run = restore_run(workdir)
    recon = make_reconstructor(run.experiment.vae)
    params = averaged_params(run.state)
    cond_key = run.experiment.cond_key
    sq = []
    for i in range(0, len(test), 500):
        x = test[i:i + 500]
        cond = None if cond_key is None else run.test[cond_key][i:i + 500]
        r = np.asarray(recon(params, x, cond))
        sq.append(((r - x) ** 2).reshape(len(x), -1).sum(-1))
    return float(np.mean(np.concatenate(sq)))


def run_jvae(name: str, args, test: np.ndarray, *, evaluate: bool = True) -> dict:
    from jvae.app.config import make_config
    from jvae.app.modes.evaluate import evaluate_run
    from jvae.train import train_and_evaluate
    settings, _, _, bound = FAMILIES[name]
    cfg = make_config(RECIPE, settings, {"data_dir": str(args.data_dir), "epochs": args.epochs,
                                         "seed": args.seed})
    if args.time_only:
        # A fresh folder for every timed run: in a used one jvae would resume the finished
        # run (no epochs) and its metrics would be the earlier run's.
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"time-{name}-", dir=args.workdir))
    else:
        workdir = Path(args.workdir) / name
        if workdir.exists():
            raise SystemExit(f"{workdir} holds an earlier run, which jvae would resume rather "
                             "than train afresh; remove it or pass another --workdir")
    train_and_evaluate(cfg, workdir, quiet=True)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    # Compiling is part of what jvae costs: the first epoch's compile time is counted.
    row = {"library": "jvae",
           "train_s": round(sum(r["epoch_s"] for r in rows) + rows[0]["compile_s"], 1),
           "compile_s": round(rows[0]["compile_s"], 1)}
    if not evaluate:
        return row
    row["test_mse"] = _jvae_mse(workdir, test)
    if bound:
        t0 = time.perf_counter()
        report = evaluate_run(workdir, iw_samples=args.iw_samples,
                              num_test_images=args.nll_images, batch_size=100,
                              chunk_size=250, seed=args.seed, fid_images=0)
        row.update(neg_elbo=report["neg_elbo"], nll=report["nll_bound"],
                   nll_s=round(time.perf_counter() - t0, 1))
    return row


def _run_one(name: str, library: str, args) -> tuple[dict, int]:
    """One family's row from one library, in a process of its own."""
    train, test = _data(args)
    if library == "pythae":
        # PyTorch's first training pays one-off setup costs; pay them outside the timings.
        run_pythae("vae", argparse.Namespace(**{**vars(args), "epochs": 1}), train[:1000],
                   test[:10], evaluate=False)
        return run_pythae(name, args, train, test, evaluate=not args.time_only), len(train)
    return run_jvae(name, args, test, evaluate=not args.time_only), len(train)


def _median_rows(rows: list[dict]) -> list[dict]:
    """Per family, the median of each library's timed runs and their ratio (Pythae / jvae)."""
    out = []
    for name in dict.fromkeys(r["family"] for r in rows):
        times = {lib: sorted(r["train_s"] for r in rows
                             if r["family"] == name and r["library"] == lib and "failed" not in r)
                 for lib in ("jvae", "pythae")}
        if not (times["jvae"] and times["pythae"]):
            continue
        med = {lib: float(np.median(t)) for lib, t in times.items()}
        out.append({"benchmark": "zoo_pythae_time_median", "family": name,
                    "runs": min(len(t) for t in times.values()),
                    "jvae_s": round(med["jvae"], 2), "pythae_s": round(med["pythae"], 2),
                    "speedup": round(med["pythae"] / med["jvae"], 2),
                    "jvae_all_s": times["jvae"], "pythae_all_s": times["pythae"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--workdir", default="/tmp/jvae_zoo_pythae", help="jvae's run folders")
    p.add_argument("--out", default="/tmp/zoo_pythae.jsonl", help="JSON rows, appended")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--libraries", default="jvae,pythae")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--iw-samples", type=int, default=1000)
    p.add_argument("--nll-images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-only", action="store_true",
                   help="train and time only (no evaluation): a paired speed run")
    p.add_argument("--repeats", type=int, default=1,
                   help="with --time-only: time each pair this many times, the libraries in "
                        "turn, and end with each family's medians")
    args = p.parse_args()
    if args.repeats < 1 or (args.repeats > 1 and not args.time_only):
        raise SystemExit("--repeats takes a count of 1 or more, and more than 1 only with "
                         "--time-only (an evaluated run is not repeated)")
    out = Path(args.out)
    kind = "zoo_pythae_time" if args.time_only else "zoo_pythae"
    done = set()
    if out.exists():
        # A run of this kind (timed or evaluated) and length already there.
        done = {(r["family"], r["library"], r.get("repeat", 0))
                for r in map(json.loads, out.read_text().splitlines())
                if "library" in r and r["benchmark"] == kind and r["epochs"] == args.epochs}
    ctx = multiprocessing.get_context("spawn")
    for name in args.families.split(","):
        if name not in FAMILIES:
            raise SystemExit(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    for library in args.libraries.split(","):
        if library not in ("jvae", "pythae"):
            raise SystemExit(f"unknown library {library!r}; choose jvae or pythae")
    for name in args.families.split(","):
        # Repeat by repeat, the libraries in turn: a slow stretch of a shared machine then
        # falls on both, and the medians are of runs side by side.
        for repeat in range(args.repeats):
            for library in args.libraries.split(","):
                if library == "pythae" and FAMILIES[name][1] is None:
                    continue
                if (name, library, repeat) in done:
                    continue
                with ctx.Pool(1) as pool:
                    row, train_images = pool.apply(_run_one, (name, library, args))
                row = {"benchmark": kind, "family": name, "epochs": args.epochs,
                       "train_images": train_images, "nll_images": args.nll_images,
                       "iw_samples": args.iw_samples, "seed": args.seed, "repeat": repeat, **row}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    if args.time_only:
        families = set(args.families.split(","))
        timed = [r for r in map(json.loads, out.read_text().splitlines())
                 if r.get("benchmark") == kind and r["family"] in families
                 and r.get("repeat", 0) < args.repeats and r["epochs"] == args.epochs]
        for row in _median_rows(timed):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
