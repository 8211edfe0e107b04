"""jvae.metrics.lpips against the lpips 0.1.4 package, the weight store and ``jvae weights``.

The reference is ``lpips.LPIPS(net=..., pretrained=True, pnet_rand=True)``: a
randomly initialised torchvision backbone and the lin heads the lpips wheel
ships (nothing is downloaded). Its state dict is converted and both compute
the distances, the per-layer terms and the backbone's taps of the same random
images (square and not, odd sizes pooled down with floor) within 1e-5; the
gradient with respect to the first image agrees with torch's autograd. The
weight store is exercised in a temporary ``JVAE_WEIGHTS_DIR`` with pooch
patched, so no test touches the network.
"""

import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jvae.base import ConfigError
from jvae.metrics import weights as store
from jvae.metrics.lpips import (
    LpipsError,
    backbone_features,
    feature_distances,
    lpips_distance,
    lpips_fn,
    params_from_state_dicts,
    scale_inputs,
)
from jvae.metrics.torch_files import read_torch_file

torch = pytest.importorskip("torch")
lpips_ref = pytest.importorskip("lpips")
# Its module-scoped fixtures build the torch networks once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("lpips")


def _reference(net):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice about 'pretrained'
        model = lpips_ref.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, params_from_state_dicts(sd, sd, net=net), sd


@pytest.fixture(scope="module")
def vgg():
    return _reference("vgg")


def _images(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, shape), -1, 1).astype(np.float32)
    return x, y


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _assert_close(ours, ref, tol=1e-5):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    assert np.all(np.abs(ours - ref) <= tol * np.maximum(1.0, np.abs(ref))), (ours, ref)


def _distances_and_gradient(params, x, y):
    """Per-image LPIPS and the gradient of their sum with respect to x: one compiled program."""
    return jax.value_and_grad(lambda a: (jnp.sum(d := lpips_distance(params, a, y)), d), has_aux=True)(x)


def test_distances_and_gradient_match_lpips(vgg):
    model, params, _ = vgg
    x, y = _images((2, 64, 64, 3), seed=0)
    (_, distances), grad = jax.jit(_distances_and_gradient)(params, x, y)
    # The gradient with respect to the first image, as a loss term uses it, against torch's
    # autograd in float64 (torch's own float32 gradient is off by 3e-3 of its largest entry
    # here; ours by 1e-5).
    xt = _nchw(x).double().requires_grad_(True)
    try:
        ref = model.double()(xt, _nchw(y).double())
        ref.sum().backward()
    finally:
        model.float()
    assert distances.shape == (2,) and distances.dtype == grad.dtype == np.float32
    assert np.all(np.asarray(distances) > 0.01)
    _assert_close(distances, ref.detach().numpy().reshape(-1))
    ref_grad = xt.grad.numpy().transpose(0, 2, 3, 1)
    assert np.all(np.isfinite(ref_grad))
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-4 * np.abs(ref_grad).max())


def _pieces(params, x, y):
    """Per-layer terms and backbone taps from one backbone pass, and LPIPS of the same images
    mapped to [0, 1] with ``normalize``."""
    feats = backbone_features(params, scale_inputs(jnp.concatenate([x, y])))
    fx, fy = [f[: x.shape[0]] for f in feats], [f[x.shape[0]:] for f in feats]
    return feature_distances(params, fx, fy), fx, lpips_distance(params, (x + 1) / 2, (y + 1) / 2, normalize=True)


def test_layers_features_and_normalize_match_lpips_at_odd_sizes(vgg):
    """49x57 pools down to 3x3 by relu5_3 (floor at each odd size). (Sizes whose taps are 2
    pixels wide run slowly through XLA:CPU's convolutions, so the test avoids them.)"""
    model, params, _ = vgg
    x, y = _images((3, 49, 57, 3), seed=1)
    with torch.no_grad():
        ref, ref_layers = model(_nchw(x), _nchw(y), retPerLayer=True)
        ref_feats = model.net(model.scaling_layer(_nchw(x)))
    layers, feats, normalized = jax.jit(_pieces)(params, x, y)
    for mine, theirs in zip(layers, ref_layers, strict=True):
        _assert_close(mine, theirs.numpy().reshape(-1))
    _assert_close(normalized, ref.numpy().reshape(-1))
    for mine, theirs in zip(feats, ref_feats, strict=True):
        theirs = theirs.numpy().transpose(0, 2, 3, 1)
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
    assert feats[-1].shape == (3, 3, 3, 512)
    np.testing.assert_array_equal(lpips_fn(params)(x, x), 0.0)


def test_alexnet_backbone_matches_lpips():
    model, params, _ = _reference("alex")
    x, y = _images((2, 64, 64, 3), seed=3)
    with torch.no_grad():
        ref = model(_nchw(x), _nchw(y)).numpy().reshape(-1)
    _assert_close(lpips_fn(params)(x, y), ref)
    assert params["backbone"]["features_0"]["kernel"].shape == (11, 11, 3, 64)


def _torchvision_keys(sd):
    """lpips' ``net.slice<k>.<i>.*`` as torchvision's ``features.<i>.*``."""
    return {"features." + k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("net.")}


def test_torchvision_and_lpips_spellings_give_the_same_params(vgg):
    _, params, sd = vgg
    heads = {k: v for k, v in sd.items() if k.startswith("lin")}
    other = params_from_state_dicts(_torchvision_keys(sd), heads)
    assert jax.tree.structure(other) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    k = params["backbone"]["features_28"]["kernel"]
    assert k.shape == (3, 3, 512, 512) and k.dtype == np.float32
    assert params["heads"]["lin0"]["kernel"].shape == (1, 1, 64, 1)


def test_wrong_state_dicts_name_the_tensor(vgg):
    _, _, sd = vgg
    backbone = dict(_torchvision_keys(sd))
    del backbone["features.12.bias"]
    with pytest.raises(LpipsError, match=r"12\.bias"):
        params_from_state_dicts(backbone, sd)
    with pytest.raises(LpipsError, match=r"lpips vgg\.pth heads"):
        params_from_state_dicts(sd, {})
    with pytest.raises(LpipsError, match=r"expected \(64, 3, 11, 11\)"):
        params_from_state_dicts(sd, sd, net="alex")
    with pytest.raises(ConfigError, match="squeeze"):
        params_from_state_dicts(sd, sd, net="squeeze")


# --- the weight store and `jvae weights` ------------------------------------------------


@pytest.fixture(scope="module")
def saved_files(vgg, tmp_path_factory):
    """torch.save'd random VGG16 features (torchvision keys, zip format) and heads (legacy format)."""
    _, params, sd = vgg
    folder = tmp_path_factory.mktemp("pth")
    backbone, heads = folder / "vgg16-random.pth", folder / "heads.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _torchvision_keys(sd).items()}, backbone)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items() if k.startswith("lin")}, heads,
               _use_new_zipfile_serialization=False)
    return backbone, heads, params


@pytest.fixture
def weight_files(saved_files, tmp_path, monkeypatch):
    """The saved files, and an empty weights directory."""
    monkeypatch.setenv(store.WEIGHTS_DIR_ENV, str(tmp_path / "store"))
    return saved_files


def _no_network(monkeypatch):
    import pooch
    import requests

    def offline(url, *args, **kwargs):
        raise requests.exceptions.ConnectionError(f"Failed to resolve host of {url}\nsecond line")

    monkeypatch.setattr(pooch, "retrieve", offline)


def _assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_missing_weights_name_the_file_the_command_and_the_urls(tmp_path, monkeypatch):
    monkeypatch.setenv(store.WEIGHTS_DIR_ENV, str(tmp_path))
    assert store.weights_dir() == tmp_path and not store.is_available("lpips")
    with pytest.raises(store.WeightStoreError) as info:
        store.load("lpips")
    message = str(info.value)
    assert str(tmp_path / "lpips_vgg.npz") in message and "\n" not in message
    assert "jvae weights fetch lpips" in message and "jvae weights convert lpips --backbone" in message
    assert all(s.url in message for s in store.WEIGHT_SETS["lpips"].sources)
    monkeypatch.delenv(store.WEIGHTS_DIR_ENV)
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path / "data"))
    assert store.weights_dir() == tmp_path / "data" / "weights"


def test_offline_fetch_is_one_line_with_the_manual_route(tmp_path, monkeypatch):
    monkeypatch.setenv(store.WEIGHTS_DIR_ENV, str(tmp_path))
    _no_network(monkeypatch)
    with pytest.raises(store.WeightStoreError) as info:
        store.fetch("inception")
    message = str(info.value)
    assert "\n" not in message and "ConnectionError" in message
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert "jvae weights convert inception --backbone" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []  # no downloads folder left behind


def test_convert_from_local_files_then_load_round_trips(weight_files):
    backbone, heads, params = weight_files
    direct = params_from_state_dicts(read_torch_file(backbone), read_torch_file(heads))
    _assert_same_tree(direct, params)
    path = store.convert("lpips", backbone=backbone, heads=heads)
    assert path == store.weights_path("lpips") and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    _assert_same_tree(store.load("lpips"), direct)
    assert store.status("lpips") == "installed from other files"
    # Without --heads, the lpips package's own vgg.pth (the heads the reference model loaded).
    store.convert("lpips", backbone=backbone)
    _assert_same_tree(store.load("lpips"), direct)
    with pytest.raises(store.WeightStoreError, match="SHA-256"):
        store.convert("lpips", backbone=backbone, heads=heads, check_digest=True)
    with pytest.raises(store.WeightStoreError, match="heads.pth"):  # backbone and heads swapped
        store.convert("lpips", backbone=heads, heads=heads)


def test_fetch_verifies_and_converts(weight_files, monkeypatch):
    """fetch with the published digests replaced by those of the local files."""
    backbone, heads, params = weight_files
    ws = store.WEIGHT_SETS["lpips"]
    local = {"backbone": backbone, "heads": heads}
    sources = tuple(s._replace(sha256=store.file_sha256(local[s.role]), package_file=None) for s in ws.sources)
    monkeypatch.setitem(store.WEIGHT_SETS, "lpips", ws._replace(sources=sources))
    fetched = []

    def retrieve(url, known_hash, fname, path, progressbar):
        role = next(s.role for s in sources if s.url == url)
        assert known_hash == "sha256:" + store.file_sha256(local[role])
        target = path / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local[role], target)
        fetched.append(target)
        return str(target)

    import pooch
    monkeypatch.setattr(pooch, "retrieve", retrieve)
    store.fetch("lpips")
    assert len(fetched) == 2 and not any(p.exists() for p in fetched)  # downloads removed
    _assert_same_tree(store.load("lpips"), params)
    assert store.status("lpips") == "installed"
    store.fetch("lpips")  # installed already: nothing downloaded
    assert len(fetched) == 2


def test_published_digests_begin_with_the_file_name_hash():
    for ws in store.WEIGHT_SETS.values():
        for s in ws.sources:
            assert len(s.sha256) == 64 and s.url.endswith("/" + s.file)
            stem = s.file.rsplit(".", 1)[0]
            if "-" in stem:  # torch.hub's <name>-<first 8 hex digits of the SHA-256>.pth
                assert s.sha256.startswith(stem.rsplit("-", 1)[1])


def test_the_lpips_wheel_heads_are_the_published_file():
    heads = store.WEIGHT_SETS["lpips"].sources[1]
    path = store._package_copy(heads)
    assert path is not None and store.file_sha256(path) == heads.sha256


def test_inception_converts_from_a_local_file(tmp_path, monkeypatch):
    inception = pytest.importorskip("jvae.metrics.inception")
    monkeypatch.setenv(store.WEIGHTS_DIR_ENV, str(tmp_path / "store"))
    rng = np.random.default_rng(0)
    sd = {k: torch.from_numpy(rng.uniform(0.5, 1.5, shape[-1:]).astype(np.float32)).expand(shape)
          for k, shape in inception.state_dict_shapes().items()}
    path = tmp_path / "inception.pth"
    torch.save(sd, path)
    store.convert("inception", backbone=path)
    direct = inception.params_from_state_dict({k: v.contiguous().numpy() for k, v in sd.items()})
    loaded = store.load("inception")
    assert jax.tree.structure(loaded) == jax.tree.structure(direct)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(a, b)


def test_cli_lists_fetches_and_converts(weight_files, monkeypatch, capsys):
    from helpers import run_cli

    backbone, heads, params = weight_files
    code, out = run_cli(["weights", "list"], capsys)
    assert code == 0
    lines = out.out.splitlines()
    assert str(store.weights_dir()) in lines[0]
    assert any(line.startswith("lpips") and "missing" in line and str(store.weights_path("lpips")) in line
               for line in lines)
    assert any(line.startswith("inception") and "missing" in line for line in lines)

    _no_network(monkeypatch)
    code, out = run_cli(["weights", "fetch", "lpips"], capsys)
    assert code == 2 and out.out.startswith("downloading https://download.pytorch.org/models/vgg16-397923af.pth")
    assert out.err.count("\n") == 1 and out.err.startswith("jvae weights: error: cannot download ")
    assert "vgg16-397923af.pth" in out.err and "jvae weights convert lpips" in out.err

    code, out = run_cli(["weights", "convert", "lpips", "--backbone", str(tmp_missing := backbone.with_name("x.pth"))],
                        capsys)
    assert code == 2 and str(tmp_missing) in out.err and out.err.count("\n") == 1

    code, out = run_cli(["weights", "convert", "lpips", "--backbone", str(backbone), "--heads", str(heads)], capsys)
    assert code == 0 and str(store.weights_path("lpips")) in out.out
    _assert_same_tree(store.load("lpips"), params)
    code, out = run_cli(["weights", "list"], capsys)
    assert any(line.startswith("lpips") and "installed from other files" in line for line in out.out.splitlines())

    code, out = run_cli(["weights", "fetch", "nothing"], capsys)
    assert code == 2 and "invalid choice" in out.err
