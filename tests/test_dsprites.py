"""The built-in dSprites-like dataset: its factor grid, its drawing and its cache."""

import hashlib
import json

import numpy as np
import pytest

from jvae.datasets import dsprites as ds
from jvae.datasets.sources import load_splits

from helpers import run_cli

SIZES = np.asarray(ds.DSPRITES_SIZES)


def _random_factors(n, seed=0, **fixed):
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)
    for name, value in fixed.items():
        f[:, ds.DSPRITES_FACTORS.index(name)] = value
    return f


def test_the_factor_grid_is_dsprites_and_indexes_like_it():
    assert ds.DSPRITES_FACTORS == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert tuple(SIZES) == (3, 6, 40, 32, 32) and SIZES.prod() == 737_280
    # Shape slowest, pos_y fastest: DeepMind's latents_bases without its colour.
    np.testing.assert_array_equal(ds.index_to_factors([0, 1, 32, 1024, 40960, 737_279]),
                                  [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0],
                                   [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [2, 5, 39, 31, 31]])
    f = _random_factors(1000)
    np.testing.assert_array_equal(ds.index_to_factors(ds.factors_to_index(f)), f)
    shapes, scales, angles, xs, ys = ds.dsprites_factor_values()
    np.testing.assert_allclose(scales, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 40)  # 40 distinct rotations
    assert (len(shapes), len(xs), len(ys)) == (3, 32, 32)
    with pytest.raises(ValueError, match="out of range"):
        ds.factors_to_index([[3, 0, 0, 0, 0]])


def test_drawing_is_deterministic_binary_and_pinned():
    f = ds.index_to_factors(np.arange(0, 737_280, 4099))
    a, b = ds.render_dsprites(f), ds.render_dsprites(f)
    assert a.dtype == bool and a.tobytes() == b.tobytes()
    # Changing how shapes are drawn changes these bytes: bump dsprites._VERSION (the
    # cache file's name) and this digest together.
    assert (hashlib.sha256(np.packbits(a).tobytes()).hexdigest()
            == "23e4e021358dc790646773d4b815d5768d2508eebb9390dd362d47cb356c7a33")
    images = ds.dsprites_images(f, cache=False)
    assert images.shape == (len(f), 64, 64, 1) and set(np.unique(images)) == {0, 255}
    # No shape touches the border: moving one never clips it.
    border = np.concatenate([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], axis=1)
    assert not border.any()


def test_every_factor_changes_the_image():
    base = _random_factors(1500, seed=1)
    images = ds.render_dsprites(base)
    for k, name in enumerate(ds.DSPRITES_FACTORS):
        step = base.copy()
        step[:, k] = (step[:, k] + 1) % SIZES[k]
        same = (ds.render_dsprites(step) == images).all(axis=(1, 2))
        assert not same.any(), (name, base[same][:3])


def test_shapes_have_their_areas_and_differ():
    # Point sampling is unbiased: the mean pixel count over random placements is the area.
    r = ds._RADIUS
    grid = np.linspace(-1.5, 1.5, 1501)
    x, y = np.meshgrid(grid, grid)
    heart = np.mean((x ** 2 + y ** 2 - 1) ** 3 - x ** 2 * y ** 3 <= 0) * 9.0
    areas = {"square": 2 * r ** 2, "ellipse": np.pi * r * (r / 2),
             "heart": heart * (r / ds._HEART_R) ** 2}
    scales = ds.dsprites_factor_values()[1]
    for i, name in enumerate(ds.DSPRITES_SHAPES):
        f = _random_factors(1000, seed=2, shape=i)
        pixels = ds.render_dsprites(f).sum(axis=(1, 2))
        expected = areas[name] * scales[f[:, 1]] ** 2 * 64 * 64
        assert abs(np.mean(pixels / expected) - 1) < 0.005, name
    same_place = np.array([[s, 5, 3, 16, 16] for s in range(3)])
    drawn = ds.render_dsprites(same_place)
    assert all((drawn[i] != drawn[j]).sum() > 20 for i, j in [(0, 1), (0, 2), (1, 2)])


def test_orientation_turns_about_the_centre():
    # A quarter turn of a shape centred on the diagonal is its transpose for the
    # ellipse (mirror-symmetric) and itself for the square.
    f = np.array([[s, c, 0, p, p] for s in (0, 1) for c in range(6) for p in range(0, 32, 3)])
    quarter = f.copy()
    quarter[:, 2] = 10
    a, b = ds.render_dsprites(f), ds.render_dsprites(quarter)
    ellipse = f[:, 0] == 1
    np.testing.assert_array_equal(a[ellipse].transpose(0, 2, 1), b[ellipse])
    np.testing.assert_array_equal(a[~ellipse], b[~ellipse])


def test_the_cache_is_reused_and_survives_a_torn_write(tmp_path, monkeypatch):
    calls = []
    real = ds.render_dsprites

    def counting(factors, chunk=1024):
        calls.append(len(factors))
        return real(factors, chunk)

    monkeypatch.setattr(ds, "render_dsprites", counting)
    first = ds.load_dsprites("train", examples=300, cache_dir=tmp_path)
    assert calls == [300] and ds.DSpritesCache(tmp_path).rendered() == 300
    again = ds.load_dsprites("train", examples=300, cache_dir=tmp_path)
    assert calls == [300]  # read back, not drawn again
    for key in ("image", "label", "factors"):
        np.testing.assert_array_equal(first[key], again[key])
    # A smaller subset is a prefix; a larger one draws only what is new.
    small = ds.load_dsprites("train", examples=100, cache_dir=tmp_path)
    np.testing.assert_array_equal(small["factors"], first["factors"][:100])
    ds.load_dsprites("train", examples=400, cache_dir=tmp_path)
    assert calls == [300, 100]
    np.testing.assert_array_equal(first["image"], ds.load_dsprites(
        "train", examples=300, cache=False)["image"])
    np.testing.assert_array_equal(first["label"], first["factors"][:, 0])
    # Bytes written without their flag (a writer stopped between the two) are drawn again.
    cache = ds.DSpritesCache(tmp_path)
    index = ds.factors_to_index(first["factors"][:5])
    cache._array[index, :512] = 0xAA
    cache._array[index, 512] = 0
    cache._array.flush()
    np.testing.assert_array_equal(cache.images(index), first["image"][:5])
    assert calls[-1] == 5
    # A cache this process may not write (root ignores file modes: asked of os.access)
    # is read, and what it lacks is drawn, not stored.
    monkeypatch.setattr(ds.os, "access", lambda path, mode: False)
    read_only = ds.DSpritesCache(tmp_path)
    assert not read_only.writable and read_only.rendered() == 400
    more = ds.load_dsprites("train", examples=450, cache_dir=tmp_path)
    np.testing.assert_array_equal(more["image"][:300], first["image"])
    assert calls[-1] == 50 and ds.DSpritesCache(tmp_path).rendered() == 400


def test_splits_are_fixed_disjoint_and_subsettable(tmp_path, monkeypatch):
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path))
    train, test, info = load_splits("dsprites", train_examples=500, test_examples=200)
    assert train["image"].shape == (500, 64, 64, 1) and test["image"].shape == (200, 64, 64, 1)
    assert info["classes"] == ["square", "ellipse", "heart"]
    assert info["factors"] == list(ds.DSPRITES_FACTORS)
    np.testing.assert_array_equal(train["label"], train["factors"][:, 0])
    whole_test = ds._split_order()[0]
    assert len(whole_test) == ds.DSPRITES_TEST == 10_000
    np.testing.assert_array_equal(ds.factors_to_index(test["factors"]), whole_test[:200])
    assert not set(ds.factors_to_index(train["factors"])) & set(whole_test)
    assert (tmp_path / "cache" / "dsprites-v1.npy").is_file()


def test_example_counts_take_any_datasets_first_examples(tmp_path):
    from PIL import Image

    from jvae.datasets.digits import load_digits
    from jvae.datasets.stream import SplitView
    train, test, _ = load_splits("digits", train_examples=100, test_examples=30)
    whole_train, whole_test = load_digits("train"), load_digits("test")
    np.testing.assert_array_equal(train["image"], whole_train["image"][:100])
    np.testing.assert_array_equal(test["label"], whole_test["label"][:30])
    # A folder's lazy training split stays a view on disk, of its first rows.
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for i in range(n):
            path = tmp_path / "pics" / split / "a" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
    options = dict(data_source=str(tmp_path / "pics"), lazy=True, cache_dir=tmp_path / "cache")
    full, _, _ = load_splits("", **options)
    part, part_test, _ = load_splits("", train_examples=4, test_examples=2, **options)
    assert isinstance(part["image"], SplitView) and part["image"].shape[0] == 4
    np.testing.assert_array_equal(part["image"].read(), full["image"].read()[:4])
    assert len(part_test["image"]) == len(part_test["label"]) == 2


@pytest.mark.slow  # its time is scikit-learn's trees (DCI); its JAX parts run in other tests
def test_train_then_evaluate_reports_the_disentanglement_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JVAE_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    code, out = run_cli(["train", "--dataset", "dsprites", "--train-examples", "256",
                         "--test-examples", "64", "--epochs", "1", "--batch-size", "64",
                         "--eval-batch-size", "64", "--hidden", "32", "--latent-dim", "4",
                         "--quality-images", "16", "--num-images", "4", "--no-dashboard",
                         "--no-tensorboard", "--workdir", str(run)], capsys)
    assert code == 0, out.err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["train_examples"], saved["test_examples"]) == (256, 64)
    code, out = run_cli(["evaluate", "--workdir", str(run), "--iw-samples", "4",
                         "--factor-points", "200", "--dci-points", "100", "--score-points",
                         "20", "--score-batch", "8"], capsys)
    assert code == 0, out.err
    report = json.loads(out.out.strip().splitlines()[-1])
    metrics = report["disentanglement"]
    assert report["n_eval_images"] == 64 and metrics["factors"] == list(ds.DSPRITES_FACTORS)
    for name in ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement",
                 "dci_completeness", "dci_informativeness"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert (metrics["factor_points"], metrics["dci_points"], metrics["score_points"]) == (
        200, 100, 20)
    code, out = run_cli(["evaluate", "--workdir", str(run), "--dci-points", "5"], capsys)
    assert code == 2 and "--dci-points must be at least 100" in out.err
