"""The largest batch that fits, from the compiler's memory plan (no trial OOMs).

XLA plans every buffer of a compiled program ahead of time, and
``Compiled.memory_analysis()`` reports the plan: arguments, outputs, the part
of the outputs aliased to donated arguments, and temporaries. For a train step
the plan is affine in the batch size ``B`` (activations and their gradients
grow with ``B``; parameters, optimizer state and a resident dataset do not),
so two compilations give ``bytes(B) = a + b * B``, and the largest batch is
``floor((budget - a) / b)``, rounded down to a multiple of the device count.
Nothing is executed, so nothing runs out of memory.

The budget is the device's ``bytes_limit`` on GPU and TPU (what the allocator
may hand out) and, on CPU, the host's available memory (``MemAvailable`` in
``/proc/meminfo``) shared by the host's devices, times ``fraction`` (headroom
for what the plan does not count: the runtime, the eval step, fragmentation).

CLI: ``jvae memory`` takes the same model flags as ``jvae train`` (``--net
conv --posterior dirichlet ...``) and prints one JSON object with the estimate.
"""

from __future__ import annotations

import json
import sys
from typing import Callable, NamedTuple, Sequence

import jax

from jvae._compile import fast_compile_options
from jvae.app import flags
from jvae.app.runs import check_num_devices
from jvae.base import ConfigError
from jvae.devices.budget import compiled_bytes, device_memory_budget
from jvae.devices.parallel import data_mesh, replicated_sharding
from jvae.training.experiment import DataSpec, build, example_batch, init_state
from jvae.training.program import lower_program, resolve_placement

__all__ = ["MemoryFit", "compiled_bytes", "device_memory_budget", "fit_memory",
           "estimate_max_batch_size", "train_program_planner", "MODE", "main"]


class MemoryFit(NamedTuple):
    """``bytes(B) = intercept + slope * B`` per device, and what it implies.

    Attributes:
      intercept: bytes that do not grow with the batch (state, resident data).
      slope: bytes per example of global batch.
      sizes: the batch sizes compiled to fit the line.
      measured: the planned bytes at those sizes.
      budget: bytes available per device.
      max_batch_size: the largest multiple of ``multiple`` whose planned bytes
        fit the budget, at most ``limit`` (0 if not even the fixed part fits).
    """

    intercept: float
    slope: float
    sizes: tuple[int, ...]
    measured: tuple[int, ...]
    budget: int
    max_batch_size: int

    def predict(self, batch_size: int) -> float:
        """Planned bytes per device at ``batch_size``."""
        return self.intercept + self.slope * batch_size


def fit_memory(planned: Callable[[int], int], sizes: Sequence[int], budget: int, *,
               multiple: int = 1, limit: int | None = None, refine: int = 2) -> MemoryFit:
    """Fits ``bytes(B) = a + b * B`` through two planned sizes and solves for the budget.

    The plan is affine only once activations dominate it: at small batches
    XLA's buffer reuse hides them behind fixed-size temporaries, so fit at
    sizes large enough to matter (the defaults use 256 and 1024). The solution
    is then planned itself and, if the line was optimistic, the line through
    the two largest plans is solved again (``refine`` times at most), so the
    returned size has been checked against a real memory plan.

    Args:
      planned: ``batch_size -> bytes`` per device (e.g. ``compiled_bytes`` of
        a program compiled for that batch size).
      sizes: two distinct batch sizes to plan.
      budget: bytes available per device.
      multiple: the batch size must be a multiple of this (the device count).
      limit: an upper bound on the answer (a batch cannot exceed the dataset).
      refine: plans of the solution to check it.

    Returns:
      A :class:`MemoryFit`.
    """
    if len(sizes) != 2 or sizes[0] == sizes[1]:
        raise ValueError(f"need two distinct batch sizes to fit a line, got {tuple(sizes)}")
    points = {int(s): int(planned(int(s))) for s in sorted(sizes)}

    def line(p):
        (b0, m0), (b1, m1) = sorted(p.items())[-2:]
        slope = (m1 - m0) / (b1 - b0)
        if slope <= 0:
            raise RuntimeError(f"planned memory does not grow with the batch ({m0} and {m1} "
                               f"bytes at batch sizes {b0} and {b1}); cannot extrapolate")
        return m0 - slope * b0, slope

    def solve(intercept, slope):
        best = int((budget - intercept) // slope)
        if limit is not None:
            best = min(best, limit)
        return max(0, best - best % multiple)

    intercept, slope = line(points)
    best = solve(intercept, slope)
    for _ in range(refine):
        if best <= 0 or best in points:
            break
        points[best] = int(planned(best))
        if points[best] <= budget:
            break
        intercept, slope = line(points)
        best = solve(intercept, slope)
    if best in points and points[best] > budget:
        # Refinements ran out while still overshooting: the largest planned size that fits.
        best = max((b for b, m in points.items() if m <= budget and b % multiple == 0),
                   default=0)
    base = tuple(sorted(int(s) for s in sizes))
    return MemoryFit(float(intercept), float(slope), base, tuple(points[b] for b in base),
                     int(budget), int(best))


def train_program_planner(cfg, data_spec: DataSpec, num_examples: int
                          ) -> tuple[Callable[[int], int], int]:
    """``batch_size -> planned bytes`` of the train program ``cfg`` describes.

    The program is the one ``jvae train`` compiles (:func:`~jvae.training.program.lower_program`),
    with the placement it would choose: on ``device``, ``num_examples``
    examples resident; on ``host``, one batch per step. Only shapes are used:
    no data is read and nothing is executed.

    Returns:
      ``(planned, device_count)``.
    """
    mesh = data_mesh(cfg.num_devices or None)
    experiment = build(cfg, data_spec)
    rep = replicated_sharding(mesh)
    example = example_batch(experiment, mesh.size)
    placement = resolve_placement(cfg.data_placement, experiment,
                                  init_state(experiment, jax.random.key(0), example), example)

    def shapes(tree, sharding):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            tree)

    def planned(batch_size: int) -> int:
        state = shapes(jax.eval_shape(lambda ex: init_state(experiment, jax.random.key(0), ex),
                                      example_batch(experiment, batch_size)), rep)
        data = shapes(jax.eval_shape(lambda: example_batch(experiment, num_examples)), rep)
        steps = max(num_examples // batch_size, 1)
        return compiled_bytes(lower_program(experiment, mesh, state, data, placement=placement,
                                            batch_size=batch_size, chunk=steps,
                                            dynamic_binarize=cfg.binarize == "dynamic"
                                            ).compile(compiler_options=fast_compile_options()))

    return planned, mesh.size


def estimate_max_batch_size(cfg, data_spec: DataSpec | None = None,
                            num_examples: int = 60_000, *, sizes: Sequence[int] = (256, 1024),
                            fraction: float = 0.9, budget: int | None = None) -> MemoryFit:
    """The largest training batch for ``cfg`` on the current devices.

    Args:
      cfg: a :class:`~jvae.app.config.Config` (model, posterior, devices...).
      data_spec: the data's per-example shape and label count (default: MNIST's).
      num_examples: training examples resident on device.
      sizes: the two batch sizes compiled to fit the line (multiples of the
        device count).
      fraction: share of each device's memory to plan for.
      budget: bytes per device to plan for instead (e.g. another device's size).

    Returns:
      A :class:`MemoryFit` whose ``max_batch_size`` is the answer.
    """
    planned, n_devices = train_program_planner(cfg, data_spec or DataSpec((28, 28, 1), 10),
                                               num_examples)
    sizes = [s - s % n_devices or n_devices for s in sizes]
    if budget is None:
        budget = device_memory_budget(fraction=fraction)
    return fit_memory(planned, sizes, budget, multiple=n_devices, limit=num_examples)


def _add_arguments(parser) -> None:
    parser.add_argument("--num-examples", type=int, default=60_000, metavar="N",
                        help="training examples resident on device (int; default: 60000)")
    parser.add_argument("--data-shape", default="28,28,1", metavar="H,W,C",
                        help="per-example data shape (comma-separated ints; default: 28,28,1)")
    parser.add_argument("--num-classes", type=int, default=10, metavar="N",
                        help="labels of a conditional model's data (int; default: 10)")
    parser.add_argument("--fraction", type=flags.finite_float, default=0.9,
                        help="share of each device's memory to plan for (float; default: 0.9)")
    parser.add_argument("--sizes", default="256,1024", metavar="B1,B2",
                        help="the two batch sizes compiled to fit the memory line "
                             "(comma-separated ints; default: 256,1024)")
    parser.add_argument("--budget-mb", type=flags.finite_float, default=None, metavar="MB",
                        help="plan for this many MiB per device instead of the devices' own "
                             "(float; default: the devices' memory)")
    flags.add_config_flags(parser, groups=("model", "objective", "optimisation", "run"))


def _ints(text: str, flag: str, count: int | None = None) -> tuple[int, ...]:
    """Comma-separated positive integers (``count`` of them when given)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1 or (count is not None and len(values) != count):
        what = f"{count} comma-separated" if count else "comma-separated"
        raise ConfigError(f"{flag} {text!r} must be {what} positive integers")
    return values


def _check_args(args) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The data shape and the two batch sizes; every flag checked before anything compiles."""
    shape = _ints(args.data_shape, "--data-shape")
    sizes = _ints(args.sizes, "--sizes", 2)
    if sizes[0] == sizes[1]:
        raise ConfigError(f"--sizes {args.sizes} must be two different batch sizes: the line "
                          "through their memory plans is what is fitted")
    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.budget_mb is not None and not args.budget_mb > 0:
        raise ConfigError(f"--budget-mb must be positive, got {args.budget_mb}")
    if args.num_examples < 1 or args.num_classes < 0:
        raise ConfigError("--num-examples must be positive and --num-classes >= 0")
    return shape, sizes


def _run(args) -> int:
    """Prints the max batch size estimate for the model flags given as one JSON object."""
    cfg, _ = flags.config_from_args(args)
    shape, sizes = _check_args(args)
    check_num_devices(cfg.num_devices)
    budget = None if args.budget_mb is None else int(args.budget_mb * 2**20)
    fit = estimate_max_batch_size(cfg, DataSpec(shape, args.num_classes), args.num_examples,
                                  sizes=sizes, fraction=args.fraction, budget=budget)
    dev = jax.local_devices()[0]
    print(json.dumps({
        "backend": jax.default_backend(), "device_kind": dev.device_kind,
        "devices": len(jax.local_devices()) if not cfg.num_devices else cfg.num_devices,
        "net": cfg.net, "posterior": cfg.posterior, "hidden": list(cfg.hidden),
        "latent_dim": cfg.latent_dim, "num_examples": args.num_examples,
        "fixed_mb": round(fit.intercept / 2**20, 2),
        "per_example_kb": round(fit.slope / 2**10, 3),
        "budget_mb_per_device": round(fit.budget / 2**20, 1),
        "fit_sizes": list(fit.sizes), "planned_mb": [round(m / 2**20, 2) for m in fit.measured],
        "max_batch_size": fit.max_batch_size,
        "limited_by": "dataset" if fit.max_batch_size >= args.num_examples else "memory"}))
    return 0


MODE = flags.Mode("memory", "Estimate the largest training batch that fits, from the "
                  "compiled memory plan (nothing is run).", _add_arguments, _run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jvae.app.modes.memory``: the memory mode; returns the exit status."""
    return flags.run_mode(MODE, argv, prog="python -m jvae.app.modes.memory")


if __name__ == "__main__":
    sys.exit(main())
