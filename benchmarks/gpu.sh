#!/usr/bin/env bash
# jvae on a machine that already has JAX with CUDA (or any accelerator), in one call.
#
#   benchmarks/gpu.sh download [DIR]        # here, online: the wheels jvae needs beyond
#                                           # JAX, for Python 3.12 on x86-64 Linux, into DIR
#   benchmarks/gpu.sh [DIR [OUT]]           # there, offline: install what is missing from
#                                           # DIR, check, time; JSON lines to OUT
#
# DIR defaults to .gpu-wheels (ignored by git: pass it to the machine beside the
# checkout); OUT to $OUT/gpu.jsonl where $OUT is set, else gpu.jsonl. The machine's
# own jax, jaxlib, flax, optax, orbax-checkpoint and numpy are kept: the install is
# constrained to their installed versions and fails, saying which, rather than
# replacing them. Then, each step a JSON line in OUT:
#
#   1. kind: env: the backend, devices and versions;
#   2. kind: check: one epoch of the MLP VAE on scikit-learn's bundled digits on the
#      accelerator and on the host CPU of the same machine (same seed, same data): the
#      test -ELBO agrees within 1% (a wrong kernel or a dtype slip shows as nats);
#   3. the rows of `python -m benchmarks.run` for the MLP, conv and SD-style VAEs
#      (float32, then bfloat16 compute), against PyTorch on the same device when torch
#      is installed there; MNIST is read from --data-dir where present, else uniform
#      random images of its shape (the speed does not depend on the pixels).
#
# GPU_BUDGET_S (default 200) caps each of the two benchmark steps, so the call fits 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# What the check and the benchmarks import beyond JAX and its Flax stack (with the
# audio extra), as pip names and as the modules that show them installed. jvae reads
# MNIST from IDX files and digits from scikit-learn: tensorflow-datasets and grain
# (tfds datasets, streaming) are not needed there.
PACKAGES="distrax tfp-nightly pooch tensorboardX scikit-learn safetensors tqdm pillow
soundfile soxr"
MODULES="distrax:distrax tensorflow_probability:tfp-nightly pooch:pooch
tensorboardX:tensorboardX sklearn:scikit-learn safetensors:safetensors tqdm:tqdm PIL:pillow
soundfile:soundfile soxr:soxr"
KEEP="jax jaxlib flax optax orbax-checkpoint numpy"

if [[ "${1:-}" == "download" ]]; then
  dir=${2:-.gpu-wheels}
  mkdir -p "$dir"
  # Binary wheels only, for the machine's interpreter and platform; JAX's own
  # packages are left out (the machine has them with CUDA).
  # shellcheck disable=SC2086
  $PYTHON -m pip download --dest "$dir" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any $PACKAGES pytest pytest-xdist
  # JAX and what it brings along are there already: drop them (64 MiB travel beside
  # the checkout; these would be 52).
  rm -f "$dir"/jax-*.whl "$dir"/jaxlib-*.whl "$dir"/jax_cuda*.whl "$dir"/numpy-*.whl \
    "$dir"/scipy-*.whl "$dir"/ml_dtypes-*.whl "$dir"/opt_einsum-*.whl \
    "$dir"/tensorflow_probability-*.whl
  du -sh "$dir"
  exit 0
fi

dir=${1:-.gpu-wheels}
out=${2:-${OUT:+$OUT/}gpu.jsonl}
budget=${GPU_BUDGET_S:-200}
: > "$out"

$PYTHON - <<'EOF' || { echo "gpu.sh: no JAX here; this script uses the machine's own" >&2; exit 2; }
import jax  # noqa: F401
EOF

# Install only the modules that are missing, pinned around what is there.
missing=""
for pair in $MODULES; do
  module=${pair%%:*}
  $PYTHON -c "import $module" 2>/dev/null || missing="$missing ${pair##*:}"
done
if [[ -n "$missing" ]]; then
  [[ -d "$dir" ]] || { echo "gpu.sh: missing$missing and no wheel folder $dir" \
    "(make it online with: benchmarks/gpu.sh download $dir)" >&2; exit 2; }
  constraints=$(mktemp)
  for name in $KEEP; do
    version=$($PYTHON -c "import importlib.metadata as m; print(m.version('$name'))" \
      2>/dev/null) && echo "$name==$version" >> "$constraints"
  done
  # shellcheck disable=SC2086
  $PYTHON -m pip install --quiet --no-index --find-links "$dir" -c "$constraints" $missing
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

$PYTHON - "$out" <<'EOF'
"""The environment row and the accelerator-against-CPU check."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

out = Path(sys.argv[1])
row = {"kind": "env", "backend": jax.default_backend(),
       "devices": [d.device_kind for d in jax.devices()], "jax": jax.__version__,
       "python": sys.version.split()[0]}
for name in ("jaxlib", "flax", "optax", "orbax-checkpoint", "torch"):
    try:
        import importlib.metadata as m
        row[name] = m.version(name)
    except Exception:  # not installed: no PyTorch rows
        row[name] = None
with out.open("a") as f:
    f.write(json.dumps(row) + "\n")


def test_neg_elbo(platform: str) -> float:
    """The test -ELBO (nats) after a 1-epoch digits run on ``platform`` (a fresh process)."""
    with tempfile.TemporaryDirectory() as work:
        env = {**__import__("os").environ, "JAX_PLATFORMS": platform}
        subprocess.run([sys.executable, "-m", "jvae.train", "--dataset", "digits", "--epochs", "1",
                        "--workdir", work, "--no-dashboard", "--no-tensorboard", "--seed", "0"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        rows = Path(work, "metrics.jsonl").read_text().splitlines()
        return float(json.loads(rows[-1])["neg_elbo"])


accel = jax.default_backend()
here = test_neg_elbo(accel)
cpu = here if accel == "cpu" else test_neg_elbo("cpu")
check = {"kind": "check", "backend": accel, "test_neg_elbo": here, "cpu_test_neg_elbo": cpu,
         "relative_difference": abs(here - cpu) / abs(cpu)}
check["ok"] = check["relative_difference"] < 0.01
with out.open("a") as f:
    f.write(json.dumps(check) + "\n")
print(json.dumps(check))
if not check["ok"]:
    sys.exit(1)
EOF

torch_flag=""
$PYTHON -c "import torch" 2>/dev/null || torch_flag="--no-torch"
for dtype in float32 bfloat16; do
  # shellcheck disable=SC2086
  timeout "$budget" $PYTHON -m benchmarks.run --models mlp-normal,conv-normal,sd_vae-normal \
    --examples 60000 --batch-sizes 128,1024 --rounds 3 --compute-dtype "$dtype" --no-max-batch $torch_flag \
    --out "$out" > /dev/null || echo "{\"kind\": \"note\", \"text\": \"benchmarks.run \
$dtype stopped (exit $?; budget ${budget}s)\"}" >> "$out"
done
echo "gpu.sh: $(wc -l < "$out") rows in $out"
