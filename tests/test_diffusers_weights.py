"""jvae's sd_vae against diffusers' AutoencoderKL: same outputs from the same weights.

Randomly initialised AutoencoderKLs (no download) are saved with
``save_pretrained``, imported, and run side by side on one random input:
encoder mean and log-variance and decoder output agree within 1e-4 (float32,
CPU). The SD 1.x/2.x layout (83.65M parameters) is checked once, forward only;
a narrow variant runs the import/restore/export paths.
"""

import json

import jax
import numpy as np
import pytest

# Its module-scoped fixtures train or compile once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("diffusers_weights")

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from jvae.app.cli import main as jvae_main  # noqa: E402
from jvae.app.config import make_config  # noqa: E402
from jvae.layers.diffusers import (  # noqa: E402
    SD_CONFIG,
    WEIGHTS_FILE,
    diffusers_layout,
    params_to_tensors,
    read_tensors,
    tensors_to_params,
)
from jvae.layers.spec import parse_spec  # noqa: E402
from jvae.layers.spec_nets import load_architecture  # noqa: E402
from jvae.training.experiment import DataSpec, build  # noqa: E402


def main_import(argv):
    return jvae_main(["import-weights", *argv])


def main_export(argv):
    return jvae_main(["export-weights", *argv])


def build_vae(cfg, shape):
    return build(cfg, DataSpec(shape)).vae

TOL = 1e-4
SHAPE = (64, 64, 3)


def _autoencoder(channels, layers, groups, in_channels=3, latent=4, seed=0):
    """A random AutoencoderKL; norms and biases are perturbed too, so a swapped
    scale/bias or a dropped bias cannot hide behind PyTorch's 1/0 initialisation."""
    torch.manual_seed(seed)
    n = len(channels)
    model = diffusers.AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent,
        block_out_channels=tuple(channels), layers_per_block=layers, norm_num_groups=groups,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _reference(model, x01, z):
    """diffusers' posterior mean, log-variance and decoding, channel-last."""
    with torch.no_grad():
        nchw = torch.from_numpy(2.0 * x01 - 1.0).permute(0, 3, 1, 2)  # SD sees [-1, 1]
        dist = model.encode(nchw).latent_dist
        out = model.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample
    return [t.permute(0, 2, 3, 1).numpy() for t in (dist.mean, dist.logvar, out)]


def _max_diffs(vae, params, model, x01, z):
    """Largest |jvae - diffusers| of the mean, log-variance and decoder output."""
    mean, logvar, image = _reference(model, x01, z)
    post = jax.jit(vae.encode)(params, x01)
    decoded = jax.jit(vae.decode)(params, z)["loc"]
    return {"mean": float(np.abs(np.asarray(post["loc"]) - mean).max()),
            "logvar": float(np.abs(2 * np.log(np.asarray(post["scale"])) - logvar).max()),
            # jvae's decoder maps SD's [-1, 1] output to its [0, 1] images.
            "decoder": float(np.abs(2 * np.asarray(decoded) - 1 - image).max())}


def _inputs(latent_shape):
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(1, *SHAPE)).astype(np.float32),
            rng.standard_normal((1, *latent_shape)).astype(np.float32))


def _import_tensors(model, folder, cfg):
    """Saves ``model`` with save_pretrained and maps its safetensors file onto jvae's
    parameters, checked against the shapes of ``cfg``'s model; ``(vae, params)``."""
    model.save_pretrained(folder)
    layout = diffusers_layout(json.loads((folder / "config.json").read_text()))
    vae = build_vae(cfg, SHAPE)
    expected = jax.eval_shape(vae.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, *SHAPE), np.float32))
    params = tensors_to_params(layout, read_tensors(folder / WEIGHTS_FILE), expected)
    assert [a.shape for a in jax.tree.leaves(params)] == [
        a.shape for a in jax.tree.leaves(expected)]
    return vae, params, layout


def _config(encoder_spec):
    return make_config({"net": "spec", "encoder_spec": encoder_spec,
                        "posterior_scale": "logvar", "likelihood": "gaussian"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-channel AutoencoderKL for 28x28 images, saved: the source of a runnable import."""
    src = tmp_path_factory.mktemp("tiny") / "src"
    model = _autoencoder((8, 16), 1, 4, in_channels=1, latent=2)
    model.save_pretrained(src)
    return model, src


def test_sd_layout_is_the_packaged_sd_vae():
    arch = load_architecture("sd_vae")
    layout = diffusers_layout(SD_CONFIG)
    for part in ("encoder", "decoder"):
        assert [layer.format() for layer in parse_spec(getattr(arch, part))] == \
            layout.architecture[part]
    assert arch.data_range == (-1.0, 1.0)


def test_sd_vae_equals_diffusers(tmp_path):
    """The full SD 1.x/2.x layout, forward only (one input, one jitted call each)."""
    model = _autoencoder(SD_CONFIG["block_out_channels"], 2, 32)
    vae, params, layout = _import_tensors(model, tmp_path, _config("sd_vae"))
    assert [t.name for t in layout.tensors] == list(model.state_dict())  # diffusers' order
    assert sum(a.size for a in jax.tree.leaves(params)) == 83_653_863
    x01, z = _inputs(vae.latent_shape)
    diffs = _max_diffs(vae, params, model, x01, z)
    print("sd_vae max |jvae - diffusers|:", diffs)
    assert max(diffs.values()) < TOL, diffs


def test_small_variant_equals_diffusers(tmp_path):
    """32/64 channels, GroupNorm 8 (VAERB/VAEA with explicit groups), one layer per block."""
    model = _autoencoder((32, 64), 1, 8)
    layout = diffusers_layout(model.config)
    assert "VAERB_32_64_8" in layout.architecture["encoder"]
    vae, params, _ = _import_tensors(model, tmp_path,
                                   _config(json.dumps(layout.architecture)))
    assert vae.latent_shape == (32, 32, 4)
    x01, z = _inputs(vae.latent_shape)
    diffs = _max_diffs(vae, params, model, x01, z)
    print("small variant max |jvae - diffusers|:", diffs)
    assert max(diffs.values()) < TOL, diffs


def test_imported_run_restores_like_train_and_exports_exactly(tiny, tiny_mnist_dir, tmp_path):
    """The import is a jvae run: train accepts its settings and restores its checkpoint into
    the state it builds (evaluate builds the same), and its export is bit-identical."""
    from jvae.app.checkpoint import Checkpointer
    from jvae.app.runs import check_resumable
    from jvae.training.experiment import example_batch, init_state

    model, src = tiny
    workdir = tmp_path / "run"
    assert main_import(["--from", str(src), "--workdir", str(workdir),
                        "--data-dir", str(tiny_mnist_dir), "--batch-size", "32",
                        "--data-shape", "28,28,1"]) == 0
    record = json.loads((workdir / "diffusers.json").read_text())
    assert record["scaling_factor"] == 0.18215 and record["data_shape"] == [28, 28, 1]
    cfg = make_config(json.loads((workdir / "config.json").read_text()))
    assert (cfg.net, cfg.posterior_scale, cfg.likelihood) == ("spec", "logvar", "gaussian")
    check_resumable(workdir, cfg)  # jvae train --config WORKDIR/config.json accepts it

    # The state train and restore_run build, as zeros (their random init
    # would only cost compile time): the checkpoint must restore into it.
    experiment = build(cfg, DataSpec((28, 28, 1)))
    assert experiment.vae.latent_shape == (14, 14, 2)
    abstract = jax.eval_shape(lambda key: init_state(experiment, key, example_batch(
        experiment, cfg.batch_size)), jax.random.key(cfg.seed))
    template = jax.tree.map(
        lambda a: jax.random.key(0) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
        else jax.numpy.zeros(a.shape, a.dtype), abstract)
    with Checkpointer(workdir / "checkpoints") as ckpt:
        state, meta = ckpt.restore(template)
    assert meta["epoch"] == 0 and int(state.step) == 0
    assert jax.tree.structure(state) == jax.tree.structure(template)
    original = read_tensors(src / WEIGHTS_FILE)
    restored = params_to_tensors(diffusers_layout(model.config), jax.device_get(state.params))
    assert all(np.array_equal(restored[k], v) for k, v in original.items())

    assert main_export(["--workdir", str(workdir), "--format", "diffusers",
                        "--output", str(tmp_path / "out")]) == 0
    exported = read_tensors(tmp_path / "out" / WEIGHTS_FILE)
    assert list(exported) == list(original)
    for name, value in original.items():
        assert exported[name].dtype == value.dtype and exported[name].shape == value.shape
        assert exported[name].tobytes() == value.tobytes(), name
    again = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out", low_cpu_mem_usage=False)
    assert again.config.latent_channels == 2 and again.config.in_channels == 1


def test_legacy_attention_names_import(tiny):
    """Checkpoints from diffusers < 0.14 name attention projections query/key/value/
    proj_attn (some as 1x1 conv weights); they map to the same parameters."""
    model, src = tiny
    tensors = read_tensors(src / WEIGHTS_FILE)
    legacy = {}
    for name, value in tensors.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                         ("to_out.0", "proj_attn")):
            if f".{new}." in name:
                name = name.replace(f".{new}.", f".{old}.")
                value = value[..., None, None] if value.ndim == 2 else value
        legacy[name] = value
    assert sum(".query." in name for name in legacy) == 4  # q, k: weight and bias, 2 nets
    layout = diffusers_layout(model.config)
    jax.tree.map(np.testing.assert_array_equal, tensors_to_params(layout, legacy),
                 tensors_to_params(layout, tensors))


@pytest.mark.parametrize("change,message", [
    (lambda t: t.pop("decoder.conv_out.bias"), "tensor 'decoder.conv_out.bias' is missing"),
    (lambda t: t.update(extra=np.zeros(1, np.float32)), "extra tensor 'extra'"),
    (lambda t: t.update({"quant_conv.weight": np.zeros((4, 4, 3, 3), np.float32)}),
     "tensor 'quant_conv.weight' has shape (4, 4, 3, 3), the layout needs (4, 4, 1, 1)"),
])
def test_mismatching_weights_are_refused_and_nothing_written(tiny, tmp_path, capsys, change,
                                                             message):
    from safetensors.numpy import save_file
    _, src = tiny
    tensors = read_tensors(src / WEIGHTS_FILE)
    change(tensors)
    (tmp_path / "src").mkdir()
    save_file(tensors, str(tmp_path / "src" / WEIGHTS_FILE))
    (tmp_path / "src" / "config.json").write_text((src / "config.json").read_text())
    code = main_import(["--from", str(tmp_path / "src"), "--workdir", str(tmp_path / "run"),
                        "--data-shape", "28,28,1"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_import_refuses_settings_that_do_not_fit(tiny, tmp_path, capsys):
    _, src = tiny
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    for args, message in (
            (["--posterior", "dirichlet"], "posterior='dirichlet' does not fit"),
            (["--likelihood", "logistic_mixture"], "add parameters the weights lack"),
            (["--data-shape", "27,28,1"], "H and W divisible by 2"),
            (["--from", str(tmp_path)], "--from must be a folder saved by diffusers"),
            (["--workdir", str(tmp_path / "taken")], "already holds a run")):
        code = main_import(["--from", str(src), "--workdir", str(tmp_path / "run"),
                            "--data-shape", "28,28,1", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    assert main_export(["--workdir", str(tmp_path / "taken"), "--output", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_imported_weights_fine_tune_with_the_ldm_recipe_and_export_the_average(tiny, tiny_mnist_dir,
                                                                               tmp_path):
    """import-weights takes --recipe; train runs it (discriminator on); export writes the EMA."""
    from jvae.app.runs import restore_run
    from jvae.train import main as train_main
    from jvae.training.ema import averaged_params

    model, src = tiny
    workdir = tmp_path / "run"
    assert main_import(["--from", str(src), "--workdir", str(workdir), "--data-dir", str(tiny_mnist_dir),
                        "--batch-size", "256", "--data-shape", "28,28,1", "--recipe", "ldm_no_lpips",
                        "--adv-start", "1", "--adv-layers", "1", "--adv-channels", "4",
                        "--ema-decay", "0.9", "--num-images", "4", "--eval-batch-size", "256",
                        "--quality-images", "32"]) == 0
    cfg = json.loads((workdir / "config.json").read_text())
    assert (cfg["likelihood"], cfg["adv_weight"], cfg["beta"]) == ("laplace", 0.5, 1e-6)
    assert train_main(["--workdir", str(workdir), "--epochs", "1"]) == 0
    row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_adv_weight"] > 0 and "ms_ssim" in row
    run = restore_run(workdir)
    layout = diffusers_layout(model.config)
    ema = params_to_tensors(layout, jax.device_get(averaged_params(run.state)))
    raw = params_to_tensors(layout, jax.device_get(run.state.params))
    assert main_export(["--workdir", str(workdir), "--format", "diffusers",
                        "--output", str(tmp_path / "out")]) == 0
    exported = read_tensors(tmp_path / "out" / WEIGHTS_FILE)
    assert all(np.array_equal(exported[k], v) for k, v in ema.items())
    assert any(not np.array_equal(exported[k], v) for k, v in raw.items())


# --- the rest of the family: SDXL, the 16-channel layouts, TAESD -------------------


def _perturbed(model, seed=0):
    """Perturbs every 1-D tensor (biases, norms): PyTorch's 0/1 init would hide swaps."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _kl_variant(name):
    """A narrow AutoencoderKL with the structural keys and latent factors of a known layout."""
    from jvae.layers.diffusers import KNOWN_LAYOUTS
    known = KNOWN_LAYOUTS[name]
    keys = ("latent_channels", "use_quant_conv", "use_post_quant_conv", "scaling_factor",
            "shift_factor", "force_upcast", "mid_block_add_attention")
    torch.manual_seed(1)
    model = diffusers.AutoencoderKL(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        **{k: known[k] for k in keys if k in known})
    return _perturbed(model), known


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_sdxl_and_16_channel_layouts_equal_diffusers_and_record_their_factors(name, tmp_path):
    """SDXL (quant convs, 4 channels, scaling 0.13025, force_upcast) and the 16-channel
    SD3/Flux layout (no quant convs, scaling and shift), narrow: outputs, the sidecar's
    factors and a bit-identical export that diffusers loads."""
    model, known = _kl_variant(name)
    src, run = tmp_path / "src", tmp_path / "run"
    model.save_pretrained(src)
    assert main_import(["--from", str(src), "--workdir", str(run), "--data-shape", "32,32,3"]) == 0
    record = json.loads((run / "diffusers.json").read_text())
    assert record["class"] == "AutoencoderKL"
    assert (record["scaling_factor"], record["shift_factor"], record["force_upcast"]) == (
        known["scaling_factor"], known.get("shift_factor", 0.0), True)
    from jvae.app.modes.weights import restore_params
    params, layout = restore_params(run)
    assert ("quant_conv.weight" in {t.name for t in layout.tensors}) == (name == "sdxl")
    vae = build_vae(make_config(json.loads((run / "config.json").read_text())), (32, 32, 3))
    rng = np.random.default_rng(0)
    x01 = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
    z = rng.standard_normal((1, *vae.latent_shape)).astype(np.float32)
    assert vae.latent_shape == (16, 16, known["latent_channels"])
    diffs = _max_diffs(vae, params, model, x01, z)
    assert max(diffs.values()) < TOL, diffs
    assert main_export(["--workdir", str(run), "--output", str(tmp_path / "out")]) == 0
    original, exported = read_tensors(src / WEIGHTS_FILE), read_tensors(tmp_path / "out" / WEIGHTS_FILE)
    assert list(exported) == list(original)
    assert all(exported[k].tobytes() == v.tobytes() for k, v in original.items())
    again = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out", low_cpu_mem_usage=False)
    assert again.config.scaling_factor == known["scaling_factor"]


@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    """diffusers' default AutoencoderTiny (TAESD's layout, 2.45M parameters), saved."""
    src = tmp_path_factory.mktemp("taesd") / "src"
    torch.manual_seed(0)
    model = _perturbed(diffusers.AutoencoderTiny())
    model.save_pretrained(src)
    return model, src


def test_taesd_equals_diffusers_and_exports_bit_for_bit(taesd, tmp_path):
    from jvae.app.modes.weights import restore_params
    from jvae.layers.diffusers import TINY_CONFIG

    model, src = taesd
    assert diffusers_layout(TINY_CONFIG).architecture == diffusers_layout(model.config).architecture
    run = tmp_path / "run"
    assert main_import(["--from", str(src), "--workdir", str(run), "--data-shape", "64,64,3"]) == 0
    cfg = make_config(json.loads((run / "config.json").read_text()))
    assert (cfg.model, cfg.net) == ("ae", "spec")
    record = json.loads((run / "diffusers.json").read_text())
    assert (record["class"], record["scaling_factor"], record["shift_factor"]) == (
        "AutoencoderTiny", 1.0, 0.0)
    params, layout = restore_params(run)
    assert [t.name for t in layout.tensors] == list(model.state_dict())
    assert sum(a.size for a in jax.tree.leaves(params)) == 2_445_063
    vae = build_vae(cfg, SHAPE)
    rng = np.random.default_rng(0)
    x01 = rng.uniform(size=(2, *SHAPE)).astype(np.float32)
    # Codes beyond TAESD's clamp (3 tanh(z / 3)) test it too.
    z = 3 * rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    with torch.no_grad():
        latents = model.encode(torch.from_numpy(2 * x01 - 1).permute(0, 3, 1, 2)).latents
        image = model.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample
    code = np.asarray(jax.jit(vae.encode)(params, x01)["loc"])
    decoded = np.asarray(jax.jit(vae.decode)(params, z)["loc"])
    np.testing.assert_allclose(code, latents.permute(0, 2, 3, 1).numpy(), atol=TOL)
    # TAESD works in [0, 1]; diffusers hands out 2 y - 1.
    np.testing.assert_allclose(2 * decoded - 1, image.permute(0, 2, 3, 1).numpy(), atol=TOL)

    assert main_export(["--workdir", str(run), "--output", str(tmp_path / "out")]) == 0
    original, exported = read_tensors(src / WEIGHTS_FILE), read_tensors(tmp_path / "out" / WEIGHTS_FILE)
    assert list(exported) == list(original)
    assert all(exported[k].tobytes() == v.tobytes() for k, v in original.items())
    again = diffusers.AutoencoderTiny.from_pretrained(tmp_path / "out", low_cpu_mem_usage=False)
    assert again.config.latent_channels == 4


def test_a_file_that_fits_another_layout_says_which(taesd, tiny, tmp_path, capsys):
    """One line names the known layouts the tensors fit (or all of them, when none)."""
    _, tiny_src = taesd
    _, kl_src = tiny
    for weights, config, shape, message in (
            (tiny_src, kl_src, "28,28,1", "its tensors fit the taesd layout"),
            (kl_src, tiny_src, "32,32,3", "nor do they fit a known layout (sd, sdxl, sd3, flux, "
                                          "taesd, taesd3)")):
        src = tmp_path / message[:8].replace(" ", "_")
        src.mkdir()
        (src / WEIGHTS_FILE).write_bytes((weights / WEIGHTS_FILE).read_bytes())
        (src / "config.json").write_text((config / "config.json").read_text())
        code = main_import(["--from", str(src), "--workdir", str(tmp_path / "run"),
                            "--data-shape", shape])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
