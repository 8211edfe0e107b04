"""On-device epochs: the per-step path's batches and math, chunking, donation, no recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

from jvae.data import batches
from jvae.devices.parallel import data_mesh, replicate
from jvae.distributions.likelihoods import bernoulli
from jvae.distributions.posteriors import normal_posterior
from jvae.model import make_vae, mixed_precision
from jvae.nets import make_nets
from jvae.objectives import Objective, elbo
from jvae.train_state import create_train_state, make_optimizer, make_train_step
from jvae.training.epoch import binarize_key, epoch_order, make_train_epoch, put_dataset

N, B = 96, 32


def _setup(compute_dtype="float32"):
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("mlp", posterior=post, likelihood=lik, latent_shape=(4,),
                         data_shape=(8, 8, 1), hidden=(32,))
    vae = mixed_precision(make_vae(enc, dec, post, lik, (4,)), compute_dtype)
    objective, opt = elbo(vae), make_optimizer(1e-2)
    rng = np.random.default_rng(0)
    data = {"image": rng.random((N, 8, 8, 1), dtype=np.float32),
            "label": np.arange(N, dtype=np.int32)}
    state = create_train_state(vae, objective, opt, jax.random.key(0),
                               {k: v[:B] for k, v in data.items()})
    return vae, objective, opt, state, data


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_epoch_equals_per_step_path_on_one_and_eight_devices():
    _, objective, opt, state, data = _setup()
    one = data_mesh(1)
    step = make_train_step(objective, opt, mesh=one)
    s1, losses = replicate(state, one), []
    for batch in batches(data, B, seed=3, epoch=1, mesh=one):
        batch.pop("mask")  # full batches: the epoch path has no mask either
        s1, m = step(s1, batch)
        losses.append(float(m["loss"]))
    for n in (1, 8):
        mesh = data_mesh(n)
        run = make_train_epoch(objective, opt, mesh=mesh)
        s_in = replicate(state, mesh)
        s2, sums = run(s_in, put_dataset(data, mesh), epoch_order(N, B, seed=3, epoch=1),
                       binarize_key(0, 1), 0)
        # Same batches, same random stream, same update: the per-step path's result.
        for a, b in zip(_leaves(s1.params), _leaves(s2.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(float(sums["loss"]), sum(losses), rtol=1e-5)
        assert int(s2.step) == N // B
        # The input state was donated to the output.
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves(s_in.params))
    moved = max(np.abs(a - b).max() for a, b in zip(_leaves(s1.params), _leaves(state.params)))
    assert moved > 1e-3


def test_chunked_calls_equal_one_call_and_nothing_recompiles():
    _, objective, opt, state, data = _setup()
    mesh = data_mesh()
    run = make_train_epoch(objective, opt, mesh=mesh, dynamic_binarize=True)
    d = put_dataset(data, mesh)
    steps = N // B
    order = epoch_order(N, B, seed=0, epoch=0)
    whole, sums = run(replicate(state, mesh), d, order, binarize_key(0, 0), 0)
    compiles = []
    listener = lambda event, duration, **kw: compiles.append((event, kw))  # noqa: E731
    monitoring.register_event_duration_secs_listener(listener)

    def epoch_in_chunks(s, epoch):
        order, total = epoch_order(N, B, seed=0, epoch=epoch), None
        for start in range(steps):
            s, part = run(s, d, order[start:start + 1], binarize_key(0, epoch), start)
            total = part if total is None else jax.tree.map(jnp.add, total, part)
        return s, total

    def run_compiles():
        # Eager ops (the host-side jnp.add of the sums) compile once too; count the epoch's.
        n = len([kw for e, kw in compiles if "backend_compile" in e and "run" in str(kw)])
        compiles.clear()
        return n

    try:
        chunked, total = epoch_in_chunks(replicate(state, mesh), 0)
        assert run_compiles() == 1  # the chunk length is new: one executable for it
        epoch_in_chunks(replicate(state, mesh), 1)
        run(replicate(state, mesh), d, epoch_order(N, B, seed=0, epoch=1), binarize_key(0, 1), 0)
        assert run_compiles() == 0  # later epochs, either length: nothing compiles
    finally:
        monitoring.unregister_event_duration_listener(listener)
    for a, b in zip(_leaves(whole.params), _leaves(chunked.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(total["loss"]), float(sums["loss"]), rtol=1e-6)


def _with_pixel_stats(objective: Objective) -> Objective:
    """The objective plus per-example pixel statistics of the batch it was fed."""

    def terms(params, batch, key, loss_state):
        out, loss_state = objective.terms(params, batch, key, loss_state)
        x = batch["image"].reshape(batch["image"].shape[0], -1)
        return {**out, "nonbinary": jnp.mean(x * (1 - x), -1), "mean_x": jnp.mean(x, -1)}, \
            loss_state
    return Objective(objective.init, terms)


def test_dynamic_binarization_on_device():
    _, objective, opt, state, data = _setup()
    mesh = data_mesh()
    probe = _with_pixel_stats(objective)
    d = put_dataset(data, mesh)
    order = epoch_order(N, B, seed=0, epoch=0)
    steps = N // B
    plain = make_train_epoch(probe, opt, mesh=mesh)
    binar = make_train_epoch(probe, opt, mesh=mesh, dynamic_binarize=True)
    _, s_plain = plain(replicate(state, mesh), d, order, binarize_key(0, 0), 0)
    _, s_bin = binar(replicate(state, mesh), d, order, binarize_key(0, 0), 0)
    _, s_bin2 = binar(replicate(state, mesh), d, order, binarize_key(0, 1), 0)
    assert float(s_plain["nonbinary"]) > 0.1 * steps
    assert float(s_bin["nonbinary"]) == 0.0  # every pixel is exactly 0 or 1
    # Unbiased: P(pixel = 1) is its grey level (3000 draws: 4 standard errors).
    np.testing.assert_allclose(float(s_bin["mean_x"]), float(s_plain["mean_x"]), rtol=0.04)
    assert float(s_bin["loss"]) != float(s_bin2["loss"])  # each epoch draws anew


def test_chunk_drawn_binarization_equals_the_per_step_draw(monkeypatch):
    import jvae.training.epoch as epoch_module
    _, objective, opt, state, data = _setup()
    order, default_cap = epoch_order(N, B, seed=0, epoch=2), epoch_module._MAX_BINARIZED_CHUNK
    for n in (1, 8):
        mesh = data_mesh(n)
        d, results = put_dataset(data, mesh), {}
        # 0 bytes allowed: every step draws its own noise, inside the loop body.
        for cap in (default_cap, 0):
            monkeypatch.setattr(epoch_module, "_MAX_BINARIZED_CHUNK", cap)
            run = make_train_epoch(objective, opt, mesh=mesh, dynamic_binarize=True)
            s, sums = replicate(state, mesh), []
            for start in (0, 1, 2):  # three chunks of one step: the noise follows `start`
                s, m = run(s, d, order[start:start + 1], binarize_key(0, 2), start)
                sums.append(float(m["loss"]))
            results[cap] = (_leaves(s.params), sums)
        (p_chunk, l_chunk), (p_step, l_step) = results.values()
        assert l_chunk == l_step
        for a, b in zip(p_chunk, p_step):
            np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_keeps_float32_state():
    vae, objective, opt, state, data = _setup("bfloat16")
    x = jnp.asarray(data["image"][:B])
    assert "bf16" in str(jax.make_jaxpr(vae.encode)(state.params, x))
    post = vae.encode(state.params, x)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(post))
    mesh = data_mesh(1)
    run = make_train_epoch(objective, opt, mesh=mesh)
    out, sums = run(replicate(state, mesh), put_dataset(data, mesh),
                    epoch_order(N, B, seed=0, epoch=0), binarize_key(0, 0), 0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(out.params))
    assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(out.opt_state.mu))
    # Same model in float32: the bf16 loss is close, not equal (it is computed in bf16).
    _, objective32, _, _, _ = _setup()
    _, sums32 = make_train_epoch(objective32, opt, mesh=mesh)(
        replicate(state, mesh), put_dataset(data, mesh), epoch_order(N, B, seed=0, epoch=0),
        binarize_key(0, 0), 0)
    assert np.isfinite(float(sums["loss"]))
    np.testing.assert_allclose(float(sums["loss"]), float(sums32["loss"]), rtol=0.02)
    assert float(sums["loss"]) != float(sums32["loss"])


def test_cli_device_and_host_placement_train_alike(tiny_mnist_dir, tmp_path):
    import json

    from jvae.app.config import make_config
    from jvae.train import train_and_evaluate

    rows = {}
    for placement in ("device", "host"):
        cfg = make_config({"data_dir": str(tiny_mnist_dir), "batch_size": 64, "hidden": (32,),
                           "latent_dim": 4, "eval_batch_size": 128, "num_images": 16,
                           "epochs": 1, "data_placement": placement})
        train_and_evaluate(cfg, tmp_path / placement, quiet=True)
        rows[placement] = json.loads((tmp_path / placement / "metrics.jsonl").read_text())
    for key in ("neg_elbo", "recon", "kl", "train_loss", "train_grad_norm"):
        np.testing.assert_allclose(rows["device"][key], rows["host"][key], rtol=1e-4)
    assert rows["device"]["step"] == rows["host"]["step"] == 512 // 64
    assert rows["device"]["data_placement"] == "device"
    assert rows["host"]["data_placement"] == "host"


def test_loop_choice_and_chunking():
    from jvae.training.epoch import chunk_length, device_loop_is_fast

    _, objective, opt, state, data = _setup()
    batch = {"image": data["image"][:B]}
    assert device_loop_is_fast(objective, state, batch)  # an MLP: loop everywhere
    post, lik = normal_posterior(), bernoulli()
    enc, dec = make_nets("conv", posterior=post, likelihood=lik, latent_shape=(4,),
                         data_shape=(8, 8, 1), hidden=(16,), channels=(4, 4))
    conv_vae = make_vae(enc, dec, post, lik, (4,))
    conv = elbo(conv_vae)
    conv_state = create_train_state(conv_vae, conv, opt, jax.random.key(0), batch)
    assert jax.default_backend() == "cpu"
    assert not device_loop_is_fast(conv, conv_state, batch)  # XLA:CPU: dispatch per step
    for steps in (1, 7, 156, 157, 469):
        chunk = chunk_length(steps)
        assert steps % chunk == 0
        assert chunk == steps or 4 <= steps // chunk <= 80
    assert chunk_length(156) in (6, 12, 13) and chunk_length(157) == 157
