"""The ``jvae`` command: modes, generated flags and their help, one-line errors."""

import argparse
import dataclasses
import re
import subprocess
import sys

import pytest

from jvae.app.cli import MODES, main
from jvae.app.config import GROUPS, Config, ConfigError, make_config
from jvae.app.flags import int_range, make_parser
from jvae.training import experiment


def _actions(mode):
    parser = make_parser(mode, f"jvae {mode.name}")
    return parser, [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_flag_is_described_in_a_sentence(name):
    _, actions = _actions(MODES[name])
    assert actions
    for action in actions:
        flag = action.option_strings[0] if action.option_strings else action.dest
        text = action.help or ""
        # Drop the trailing "(type; one of ...; default ...)" part: a sentence must remain.
        sentence = re.sub(r"\s*\([^()]*\)\s*$", "", text)
        assert len(sentence.split()) >= 3, f"{name} {flag}: help is only {text!r}"


def test_config_flags_are_grouped_and_list_registry_choices(capsys):
    parser, actions = _actions(MODES["train"])
    titles = {g.title for g in parser._action_groups}
    assert {f"{g} settings" for g in GROUPS} <= titles
    by_dest = {a.dest: a for a in actions}
    for field in dataclasses.fields(Config):
        assert field.name in by_dest, field.name
    for name, registry in (("model", experiment.MODELS), ("posterior", experiment.POSTERIORS),
                           ("likelihood", experiment.LIKELIHOODS), ("net", experiment.NETS)):
        help_text = by_dest[name].help
        assert all(choice in help_text for choice in registry), (name, help_text)
    assert "0: 128" in by_dest["batch_size"].help and "int" in by_dest["batch_size"].help


def test_a_new_registry_entry_is_a_valid_choice(monkeypatch):
    with pytest.raises(ConfigError, match="model='myvae' is not one of"):
        make_config({"model": "myvae"})
    monkeypatch.setitem(experiment.MODELS, "myvae", experiment.MODELS["vae"])
    assert make_config({"model": "myvae"}).model == "myvae"


def test_top_level_usage_and_unknown_mode(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in MODES:
        assert f"  {name}" in out
    assert main(["bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mode 'bogus'" in err


def test_mode_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--workdir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json not found" in err and "Traceback" not in err
    assert main(["train", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model='nope' is not one of vae, cvae" in err


def test_python_dash_m_jvae_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "jvae", "sample", "--help"] if "sample" in MODES
                       else [sys.executable, "-m", "jvae", "memory", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--help" in r.stdout and "settings" in r.stdout


def test_int_range():
    assert int_range("0-3,7") == (0, 1, 2, 3, 7)
    for bad in ("", "3-1", "a", "-2"):
        with pytest.raises(ConfigError):
            int_range(bad)
