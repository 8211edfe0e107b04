"""The one module that knows which JAX release is installed (jvae/_compat.py)."""

import jax
import jaxlib
import pytest

from jvae import _compat


@pytest.mark.parametrize("text, expected", [("0.10.2", (0, 10)), ("0.12.0.1", (0, 12)),
                                            ("0.12.1", (0, 12)), ("2.0rc1", (2, 0)),
                                            ("1", (1, 0)), ("0.13.0.dev20261101", (0, 13))])
def test_releases_parse_to_major_and_minor(text, expected):
    assert _compat.parse_release(text) == expected


def test_the_installed_release_is_jaxlibs():
    assert _compat.JAX_VERSION == _compat.parse_release(jaxlib.__version__)
    assert _compat.JAX_VERSION[:2] == _compat.parse_release(jax.__version__)
    assert _compat.release("no-such-distribution-jvae") == (0, 0)


def test_the_cache_is_refused_only_to_cpu_jobs_of_several_processes_on_jax_0_12():
    hangs = _compat.cache_hangs_cross_process_collectives
    assert hangs("cpu", 2, (0, 12)) and hangs("cpu", 8, (0, 13))
    assert not hangs("cpu", 1, (0, 12))  # one process: no cross-process collective
    assert not hangs("gpu", 2, (0, 12)) and not hangs("tpu", 4, (0, 12))
    assert not hangs("cpu", 2, (0, 11)) and not hangs("cpu", 2, (0, 10))


def test_one_process_keeps_its_compilation_cache():
    before = jax.config.jax_enable_compilation_cache
    assert _compat.settle_compilation_cache() is False
    assert jax.config.jax_enable_compilation_cache == before
