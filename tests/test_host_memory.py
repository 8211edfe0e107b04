"""The host-memory policy: a program's temporaries stop costing page faults on every run."""

import json
import os
import subprocess
import sys

import pytest

from jvae.app.flags import make_parser
from jvae.devices import host_memory
from jvae.train import MODE

# One jitted program with a 128 MiB temporary (an im2col-like concatenation feeding
# a GEMM), far above glibc's 32 MiB mmap ceiling, run 16 times (or as many as the
# second argument says); prints the minor page faults of each run.
_PROBE = """
import json, resource, sys
from jvae.devices.host_memory import reuse_host_memory
applied = reuse_host_memory() if sys.argv[1] == "reuse" else False
import jax, jax.numpy as jnp
x = jnp.ones((2048, 4096))
f = jax.jit(lambda x: (jnp.concatenate([x * i for i in range(4)], 1) @ jnp.ones((16384, 8))).sum())
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per_run = []
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 16):
    before = faults()
    f(x).block_until_ready()
    per_run.append(faults() - before)
print(json.dumps({"applied": applied, "faults": per_run}))
"""

# One 128 MiB temporary's pages, and what counts as a run that reused its memory.
_PAGES = 128 * 2**20 // 4096
_REUSED = _PAGES / 20


def _probe(policy: str, env: dict | None = None, runs: int = 16) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, policy, str(runs)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="the policy is glibc's mallopt")
@pytest.mark.slow
def test_reuse_removes_the_page_faults_of_each_run():
    system, reuse = _probe("system"), _probe("reuse")
    assert reuse["applied"] and not system["applied"]
    # The last 10 runs (the heap grows over the first ones). glibc's default maps
    # and unmaps the temporary each run: every page faults again, every run.
    assert all(f > _PAGES / 2 for f in system["faults"][-10:]), system
    # Reused: most runs take no fault. On a loaded machine some runs still fault
    # the whole temporary again (6 to 10 of 10 runs were free in 32 probes).
    assert sum(f < _REUSED for f in reuse["faults"][-10:]) >= 5, reuse


@pytest.mark.skipif(host_memory._glibc() is None, reason="the policy is glibc's mallopt")
def test_a_users_malloc_settings_stand(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert host_memory.reuse_host_memory() is False
    # Whether the policy applies is settled before anything runs.
    assert _probe("reuse", env=dict(os.environ), runs=0)["applied"] is False


def test_every_mode_takes_the_flag_and_rejects_an_unknown_policy(capsys):
    parser = make_parser(MODE, "jvae train")
    assert parser.parse_args([]).host_memory == "reuse"
    assert parser.parse_args(["--host-memory", "system"]).host_memory == "system"
    with pytest.raises(SystemExit):
        parser.parse_args(["--host-memory", "never"])
    assert "invalid choice: 'never'" in capsys.readouterr().err


def test_apply_names_the_policy_in_effect_and_rejects_unknown_ones():
    assert host_memory.apply_host_memory("system") == "system"
    with pytest.raises(ValueError, match="unknown host memory policy 'never'"):
        host_memory.apply_host_memory("never")
