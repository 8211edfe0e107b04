"""Named recipes: packaged layers of settings a run starts from (``--recipe NAME``).

A recipe is a JSON file in ``jvae/configs/recipes/``: a ``description`` and the
``settings`` it sets. It sits between the defaults and everything the user
gives: ``defaults < recipe < --config file < flags``, so any of its settings
can be overridden. A run saves the settings it used, not the recipe's name,
so resuming it does not depend on the recipe file.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jvae.base import ConfigError

__all__ = ["recipe_names", "recipe", "recipe_settings"]


def _folder():
    return resources.files("jvae") / "configs" / "recipes"


def recipe_names() -> tuple[str, ...]:
    """The packaged recipes' names, sorted."""
    return tuple(sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".json")))


def recipe(name: str) -> dict[str, Any]:
    """A packaged recipe: ``{"description": str, "settings": {...}}``.

    Raises:
      ConfigError: no recipe has that name.
    """
    names = recipe_names()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(names)}")
    value = json.loads((_folder() / f"{name}.json").read_text(encoding="utf-8"))
    return {"description": value.get("description", ""), "settings": dict(value["settings"])}


def recipe_settings(name: str | None) -> dict[str, Any]:
    """The settings of recipe ``name`` (``{}`` for None)."""
    return {} if name is None else recipe(name)["settings"]
