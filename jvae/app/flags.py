"""The one argument parser of every ``jvae`` mode.

A mode is a :class:`Mode`: a name, a one-line summary, a function adding its
flags and a function running it. :func:`add_config_flags` turns every
:class:`~jvae.app.config.Config` field into a flag whose help is the field's own
description with its type, choices and default, grouped as the fields are
(data, model, objective, optimisation, run). :func:`run_mode` parses, runs and
turns any :class:`~jvae.base.JvaeError` into one line on stderr and its exit
status (2 for bad input), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
import warnings
from typing import Any, Callable, NamedTuple, Sequence

from jvae.app.config import (
    ALIASES,
    GROUPS,
    MAX_INT,
    Config,
    ConfigError,
    choices_of,
    load_config_file,
    make_config,
)
from jvae.app.recipes import recipe_names, recipe_settings
from jvae.base import JvaeError
from jvae.datasets.images import DataWarning
from jvae.devices.host_memory import HOST_MEMORY_POLICIES, apply_host_memory

__all__ = ["Mode", "ArgumentParser", "add_config_flags", "add_workdir_flag", "config_from_args", "recipe_of",
           "make_parser", "run_mode", "describe", "int_range", "seed_int", "finite_float",
           "add_host_memory_flag"]


class Mode(NamedTuple):
    """One ``jvae <mode>``.

    Attributes:
      name: the mode's name on the command line.
      summary: one line for ``jvae --help``.
      add_arguments: ``parser -> None``, adds the mode's flags.
      run: ``args -> exit status`` (None means 0).
    """

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


class ArgumentParser(argparse.ArgumentParser):
    """Reports errors as one line and exit status 2, with no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


_METAVARS = {"int": "N", "float": "X", "comma-separated ints": "N,N,..", "str": "TEXT"}


def _type_name(field: dataclasses.Field) -> str:
    kind = typing.get_type_hints(Config)[field.name]
    optional = type(None) in typing.get_args(kind)  # X | None
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    if typing.get_origin(base) is tuple:
        return "comma-separated ints"
    return getattr(base, "__name__", str(base))


def describe(field: dataclasses.Field) -> str:
    """A field's help: its sentence, then type, choices and default."""
    default = field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    parts = [_type_name(field)]
    choices = choices_of(field)
    if choices is not None:
        parts.append("one of " + ", ".join(map(str, choices)))
    parts.append("default: unset" if default is None else f"default: {shown}")
    # argparse %-formats help text: a literal percent sign must be doubled.
    return f"{field.metadata['help']} ({'; '.join(parts)})".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser,
                     groups: Sequence[str] = GROUPS) -> None:
    """Adds ``--config`` and one flag per :class:`~jvae.app.config.Config` field of ``groups``.

    Flags default to "not given" (argparse.SUPPRESS), so a ``--config`` file's
    values hold unless a flag overrides them.
    """
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="JSON or TOML file of settings (keys are the flag names); "
                             "flags given here override it")
    parser.add_argument("--recipe", default=argparse.SUPPRESS, metavar="NAME",
                        help=f"A packaged recipe of settings ({', '.join(recipe_names())}; "
                             "each described in jvae/configs/recipes/NAME.json) that --config and "
                             "flags override")
    titles = {g: parser.add_argument_group(f"{g} settings") for g in groups}
    for field in dataclasses.fields(Config):
        group = field.metadata["group"]
        if group not in titles:
            continue
        names = ["--" + field.name.replace("_", "-")]
        names += ["--" + a.replace("_", "-") for a, n in ALIASES.items() if n == field.name]
        if typing.get_type_hints(Config)[field.name] is bool:  # --flag / --no-flag
            titles[group].add_argument(*names, dest=field.name, default=argparse.SUPPRESS,
                                       action=argparse.BooleanOptionalAction,
                                       help=describe(field))
            continue
        titles[group].add_argument(*names, dest=field.name, default=argparse.SUPPRESS,
                                   metavar=_METAVARS.get(_type_name(field), "TEXT"),
                                   help=describe(field))


def add_workdir_flag(parser: argparse.ArgumentParser, *, required: bool,
                     help: str = "a run directory written by jvae train") -> None:
    """Adds ``--workdir DIR``."""
    parser.add_argument("--workdir", required=required, default=argparse.SUPPRESS,
                        metavar="DIR", help=help)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Config` settings named on the command line (flags default to absent)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
            if hasattr(args, f.name)}


def config_from_args(args: argparse.Namespace) -> tuple[Config, str | None]:
    """The :class:`Config` of ``--config`` plus flags, and the workdir given (or None).

    Raises:
      ConfigError: an unknown key, a bad value or an unreadable config file.
    """
    values = given_settings(args)
    file_values = load_config_file(args.config) if hasattr(args, "config") else {}
    file_workdir = file_values.pop("workdir", None)
    return (make_config(recipe_of(args), file_values, values),
            getattr(args, "workdir", None) or file_workdir)


def recipe_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of the ``--recipe`` given (``{}`` without one)."""
    return recipe_settings(getattr(args, "recipe", None))



def seed_int(text: str) -> int:
    """An argparse type: a seed, an integer in [0, 2**63) (a 64-bit PRNG key's range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..2**63 - 1")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite float (inf and nan are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def int_range(text: str) -> tuple[int, ...]:
    """Parses ``0-9`` or ``0,3,5`` (or a mix) into ints.

    Raises:
      ConfigError: text that is not a list or range of non-negative ints.
    """
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"{text!r} is not a list or range of integers such as 0-9 or "
                          "0,3,5") from None
    if not out or min(out) < 0:
        raise ConfigError(f"{text!r} must name at least one non-negative integer")
    return tuple(out)


def make_parser(mode: Mode, prog: str) -> ArgumentParser:
    """The argument parser of ``mode``, named ``prog`` in messages."""
    parser = ArgumentParser(prog=prog, description=mode.summary, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    mode.add_arguments(parser)
    add_host_memory_flag(parser)
    return parser


def add_host_memory_flag(parser: argparse.ArgumentParser) -> None:
    """Adds ``--host-memory reuse|system`` (:mod:`jvae.devices.host_memory`; applied by
    :func:`~jvae.devices.host_memory.apply_host_memory` before the first computation)."""
    parser.add_argument("--host-memory", choices=HOST_MEMORY_POLICIES, default="reuse",
                        help="reuse: keep the host memory XLA frees for the next step, no page "
                             "faults per step, the process keeps its peak memory until it exits "
                             "(the default); system: glibc's own policy (jvae.devices.host_memory). "
                             "It holds for the whole process")


def run_mode(mode: Mode, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parses ``argv`` for ``mode`` and runs it; returns the exit status.

    A :class:`~jvae.base.JvaeError` becomes one line on stderr and its
    ``exit_code``; Ctrl-C exits 130.
    """
    prog = prog or f"jvae {mode.name}"
    args = make_parser(mode, prog).parse_args(argv)
    apply_host_memory(args.host_memory)
    try:
        with warnings.catch_warnings():
            # Data notices (skipped files): one line each, not a source excerpt.
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = lambda message, *_, **__: print(
                f"{prog}: warning: {message}", file=sys.stderr, flush=True)
            status = mode.run(args)
    except JvaeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the newest finished checkpoint is kept", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)

