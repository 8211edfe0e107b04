"""jvae's FID Inception and FID against pytorch-fid 0.3.0, on random weights (no download).

pytorch-fid's ``InceptionV3([3])`` is built with ``load_state_dict_from_url``
replaced by a state dict of random weights (He-scaled convolutions, batch-norm
running statistics and affine parameters drawn away from the identity), and the
same state dict is converted by :func:`params_from_state_dict`. Both sides run
in float32 on 16 random 32x32 images (the networks resize them to 299x299; the
images are few because Inception at 299x299 costs about 6 GFLOPs each on a
shared CPU):

* pool3 features agree within 1e-5 of the features' scale,
  ``max |jvae - torch| <= 1e-5 * max |torch|``;
* FID between two sets of 8 images, pytorch-fid (its activations, ``np.mean``,
  ``np.cov``, ``calculate_frechet_distance``) against jvae (``inception_features``,
  the on-device accumulator, ``frechet_distance``), agrees within 1e-3 relative,
  on 4 feature dimensions (a full-rank covariance) and on 32 (singular: rank 7).
  All 2048 dimensions are not used: ``scipy.linalg.sqrtm`` of a 2048x2048
  product takes minutes on a shared CPU. The eps fallback for a product
  ``sqrtm`` cannot root is forced on both sides in its own test.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

# The module-scoped networks and features are built once: keep the module on one worker.
pytestmark = pytest.mark.xdist_group("fid")

torch = pytest.importorskip("torch")
pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402
from scipy import linalg  # noqa: E402

from jvae.metrics.fid import (  # noqa: E402
    ActivationStats,
    FidError,
    accumulate,
    activation_statistics,
    cached_stats,
    fid_score,
    frechet_distance,
    init_moments,
    load_stats,
    moments_to_stats,
    save_stats,
    split_fingerprint,
)
from jvae.metrics.inception import (  # noqa: E402
    FEATURE_DIM,
    InceptionError,
    _as_unit_rgb,
    inception_features,
    params_from_state_dict,
    resize_bilinear,
    state_dict_shapes,
)

SET_SIZE = 8
BATCH = 8


def _random_state_dict(seed: int = 0) -> dict:
    """The FID Inception's tensors (the .pth file's key names, fc included), drawn at random."""
    torch.manual_seed(seed)
    net = pytorch_fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    state = {}
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if key.endswith("conv.weight"):
                fan_in = value[0].numel()
                value = torch.randn_like(value) * (2.0 / fan_in) ** 0.5
            elif key.endswith("bn.weight") or key.endswith("bn.running_var"):
                value = torch.empty_like(value).uniform_(0.5, 1.5)
            elif key.endswith("bn.bias") or key.endswith("bn.running_mean"):
                value = torch.randn_like(value) * 0.2
            state[key] = value.clone()
    return state


@pytest.fixture(scope="module")
def state_dict():
    return _random_state_dict()


@pytest.fixture(scope="module")
def reference_net(state_dict):
    """pytorch-fid's InceptionV3([3]), its weights file replaced by ``state_dict``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *a, **k: dict(state_dict))
        net = pytorch_fid_inception.InceptionV3([pytorch_fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return net.eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(2 * SET_SIZE, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def torch_features(reference_net, images):
    with torch.no_grad():
        out = reference_net(torch.from_numpy(images.transpose(0, 3, 1, 2)))[0]
    return out[:, :, 0, 0].numpy()


@pytest.fixture(scope="module")
def jvae_side(state_dict, images):
    """Features and statistics of both sets, in batches of 8 (one compiled program)."""
    params = params_from_state_dict({k: v.numpy() for k, v in state_dict.items()})
    seen = []

    def features_fn(batch):
        f = inception_features(params, batch)
        seen.append(np.asarray(f))
        return f

    sets = [images[:SET_SIZE], images[SET_SIZE:]]
    stats = [activation_statistics(features_fn, (s[i:i + BATCH] for i in range(0, SET_SIZE, BATCH))) for s in sets]
    return np.concatenate(seen), stats


def test_features_equal_pytorch_fid(jvae_side, torch_features):
    features, _ = jvae_side
    assert features.shape == (2 * SET_SIZE, FEATURE_DIM) and features.dtype == np.float32
    scale = np.abs(torch_features).max()
    assert 0.1 < scale < 100 and torch_features.std() > 0.01 * scale  # BN is not identity, features are not flat
    np.testing.assert_array_less(np.abs(features - torch_features).max(), 1e-5 * scale)


def test_both_key_layouts_convert_to_the_same_params(state_dict, reference_net):
    raw = params_from_state_dict({k: v.numpy() for k, v in state_dict.items()})
    blocks = reference_net.state_dict()
    assert any(k.startswith("blocks.3.2.") for k in blocks)
    ours = params_from_state_dict(blocks)
    assert ours.keys() == raw.keys()
    for module in raw:
        for conv in raw[module]:
            for name, value in raw[module][conv].items():
                np.testing.assert_array_equal(ours[module][conv][name], value)
    assert set(state_dict_shapes()) == {k for k in state_dict if not k.startswith("fc.")
                                        and not k.endswith("num_batches_tracked")}


def test_unusable_weights_name_the_problem(state_dict):
    arrays = {k: v.numpy() for k, v in state_dict.items()}
    missing = {k: v for k, v in arrays.items() if not k.startswith("Mixed_7c.")}
    with pytest.raises(InceptionError, match="missing .*Mixed_7c"):
        params_from_state_dict(missing)
    with pytest.raises(InceptionError, match="unknown .*Mixed_8a"):
        params_from_state_dict({**arrays, "Mixed_8a.branch1x1.conv.weight": np.zeros(1)})
    wrong = {**arrays, "Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3), np.float32)}
    with pytest.raises(InceptionError, match="Conv2d_1a_3x3.conv.weight is \\(32, 1, 3, 3\\)"):
        params_from_state_dict(wrong)


@pytest.mark.parametrize("size,out", [((32, 32), (299, 299)), ((401, 350), (299, 299)), ((299, 299), (299, 299)),
                                      ((7, 13), (5, 29)), ((1, 3), (4, 2))])
def test_resize_equals_torch_bilinear(size, out):
    x = np.random.default_rng(1).uniform(size=(2, *size, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out, mode="bilinear",
                                          align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), *out)), ref, rtol=0, atol=1e-6)


def test_grey_and_uint8_images_become_unit_rgb():
    grey = np.random.default_rng(2).integers(0, 256, size=(2, 5, 4, 1), dtype=np.uint8)
    rgb = np.asarray(_as_unit_rgb(jnp.asarray(grey)))
    assert rgb.shape == (2, 5, 4, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb, np.repeat(grey / 255.0, 3, axis=-1), rtol=1e-6)
    with pytest.raises(InceptionError, match="NHWC"):
        _as_unit_rgb(jnp.zeros((2, 5, 4, 2)))
    with pytest.raises(InceptionError, match="images / 255"):
        _as_unit_rgb(jnp.zeros((2, 5, 4, 3), jnp.int32))


def _reference_fid(a, b):
    """pytorch-fid's statistics and distance (its ``disp=False`` sqrtm call is deprecated in SciPy 1.16+)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return calculate_frechet_distance(np.mean(a, axis=0), np.cov(a, rowvar=False),
                                          np.mean(b, axis=0), np.cov(b, rowvar=False))


@pytest.fixture
def sqrtm_calls(monkeypatch):
    """Counts ``scipy.linalg.sqrtm`` calls (pytorch-fid and jvae both call it through ``linalg``)."""
    calls = []
    real = linalg.sqrtm

    def spy(a, disp=True, **kwargs):
        calls.append(a.shape)
        root = real(a)
        return (root, 0.0) if disp is False else root

    monkeypatch.setattr(linalg, "sqrtm", spy)
    return calls


@pytest.mark.parametrize("dims", [4, 32])
def test_end_to_end_fid_equals_pytorch_fid(jvae_side, torch_features, dims, sqrtm_calls):
    """4 dims: a full-rank covariance; 32 dims from 8 images: singular, yet both sides'
    sqrtm stays finite and neither takes the eps fallback (one sqrtm call each)."""
    _, (stats_a, stats_b) = jvae_side
    ref = _reference_fid(torch_features[:SET_SIZE, :dims], torch_features[SET_SIZE:, :dims])
    assert len(sqrtm_calls) == 1
    ours = frechet_distance(stats_a.mu[:dims], stats_a.sigma[:dims, :dims], stats_b.mu[:dims],
                            stats_b.sigma[:dims, :dims])
    assert len(sqrtm_calls) == 2
    assert ours > 0 and abs(ours - ref) <= 1e-3 * ref
    reference_sigma = np.cov(torch_features[:SET_SIZE, :dims], rowvar=False)
    assert np.linalg.matrix_rank(reference_sigma) == min(dims, SET_SIZE - 1)


def test_full_stats_match_numpy(jvae_side, torch_features):
    _, (stats_a, _) = jvae_side
    a = torch_features[:SET_SIZE].astype(np.float64)
    assert stats_a.count == SET_SIZE
    np.testing.assert_allclose(stats_a.mu, a.mean(0), rtol=0, atol=1e-5 * np.abs(a).max())
    sigma = np.cov(a, rowvar=False)
    np.testing.assert_allclose(stats_a.sigma, sigma, rtol=0, atol=1e-4 * np.abs(sigma).max())


def test_frechet_distance_equals_pytorch_fid():
    rng = np.random.default_rng(3)
    d = 32
    stats = []
    for _ in range(2):
        x = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
        stats.append((x.mean(0), np.cov(x, rowvar=False)))
    (mu1, s1), (mu2, s2) = stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - ref) <= 1e-3 * ref
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)
    assert fid_score(ActivationStats(mu1, s1, 200), ActivationStats(mu2, s2, 200)) == frechet_distance(mu1, s1, mu2, s2)
    with pytest.raises(FidError, match="different dimensions"):
        frechet_distance(mu1, s1, mu2[:-1], s2[:-1, :-1])


def test_eps_fallback_equals_pytorch_fid(monkeypatch, capsys):
    """A product sqrtm cannot root (a non-finite first result): both add eps to the diagonals."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2, 40, 16))
    real = linalg.sqrtm
    calls = []

    def first_fails(a, disp=True, **kwargs):
        calls.append(a)
        root = real(a) * (np.nan if len(calls) % 2 == 1 else 1)
        return (root, 0.0) if disp is False else root

    monkeypatch.setattr(linalg, "sqrtm", first_fails)
    ref = _reference_fid(x, y)
    assert "adding 1e-06 to diagonal" in capsys.readouterr().out
    ours = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert len(calls) == 4 and abs(ours - ref) <= 1e-9 * ref
    np.testing.assert_allclose(calls[3], calls[1])


def test_accumulator_equals_numpy_over_uneven_masked_batches():
    """Features far from zero (mean 100, spread 1): float32 sums without the shift would cancel."""
    rng = np.random.default_rng(5)
    x = (100 + rng.normal(size=(200, 24)) @ rng.normal(size=(24, 24)) * 0.3).astype(np.float32)
    moments, start = init_moments(24, jnp.float32), 0
    for size in (1, 17, 64, 64, 40, 17):  # a lone first sample sets the shift; the last batch is padded
        chunk = x[start:start + size]
        real = len(chunk)
        padded = np.concatenate([chunk, np.full((size - real, 24), np.nan, np.float32)])
        moments = accumulate(moments, jnp.asarray(padded), jnp.arange(size) < real)
        start += real
    stats = moments_to_stats(moments)
    x64 = x.astype(np.float64)
    assert stats.count == len(x)
    np.testing.assert_allclose(stats.mu, x64.mean(0), rtol=1e-5)
    sigma = np.cov(x64, rowvar=False)
    np.testing.assert_allclose(stats.sigma, sigma, rtol=0, atol=1e-5 * np.abs(sigma).max())
    unmasked = activation_statistics(lambda f: jnp.asarray(f), (x[i:i + 50] for i in range(0, len(x), 50)))
    np.testing.assert_allclose(unmasked.sigma, sigma, rtol=0, atol=1e-5 * np.abs(sigma).max())
    with pytest.raises(FidError, match="at least 2 images, got 1"):
        moments_to_stats(accumulate(init_moments(24), jnp.asarray(x[:1])))


def test_stats_cache(tmp_path):
    rng = np.random.default_rng(6)
    stats = ActivationStats(rng.normal(size=4), np.eye(4), 10)
    path = tmp_path / "train.npz"
    key = split_fingerprint(np.arange(12).reshape(3, 4))
    save_stats(path, stats, key)
    back = load_stats(path, key)
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.count == 10
    with pytest.raises(FidError, match="delete the file"):
        load_stats(path, "another split")
    with pytest.raises(FidError, match="cannot read"):
        load_stats(tmp_path / "absent.npz")
    computed = []

    def compute():
        computed.append(1)
        return stats

    cached_stats(path, key, compute)
    assert computed == []
    assert cached_stats(path, "another split", compute).count == 10 and computed == [1]
    assert load_stats(path, "another split").count == 10
    np.savez(tmp_path / "pytorch_fid.npz", mu=stats.mu, sigma=stats.sigma)  # pytorch-fid's own stats files
    assert load_stats(tmp_path / "pytorch_fid.npz").count == 0


def test_split_fingerprint_is_stable_and_sensitive():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    fp = split_fingerprint(a)
    assert fp == split_fingerprint(a.copy()) == split_fingerprint(np.asfortranarray(a)) and len(fp) == 32
    b = a.copy()
    b[1, 2, 3] += 1
    variants = [b, a.reshape(4, 6), a.astype(np.int8)]
    assert len({fp, *map(split_fingerprint, variants)}) == 4
    with pytest.raises(FidError, match="numeric array"):
        split_fingerprint(np.array([object()]))

