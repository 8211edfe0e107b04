"""The package's structure: layers by prefix, no import cycles, packages that export their names.

From the top: the application, then training (with inference, evaluation and metrics),
then objectives, nets and datasets side by side, then distributions, the model
and devices side by side, then ``jvae/base.py``. A module imports only from its
own layer or below; areas that stand side by side never import each other.
"""

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jvae"

# Module-name prefixes of each layer, top first. A prefix names a module or a
# package (``jvae.train`` is the module, not ``jvae.train_state``).
LAYERS = (
    ("application", ("jvae.app", "jvae.train", "jvae.__main__")),
    ("training", ("jvae.training", "jvae.train_state", "jvae.inference", "jvae.evaluation",
                  "jvae.metrics")),
    ("objectives, nets, datasets", ("jvae.objectives", "jvae.terms", "jvae.nets", "jvae.layers",
                                    "jvae.data", "jvae.datasets")),
    ("distributions, model, devices", ("jvae.distributions", "jvae.model", "jvae.devices")),
    ("base", ("jvae.base", "jvae._compat", "jvae._compile")),
)
# Areas of one layer that stand side by side: none of them imports another.
SIDE_BY_SIDE = (
    {"objectives": ("jvae.objectives", "jvae.terms"), "nets": ("jvae.nets", "jvae.layers"),
     "datasets": ("jvae.data", "jvae.datasets")},
    {"distributions": ("jvae.distributions",), "model": ("jvae.model",),
     "devices": ("jvae.devices",)},
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _packages(name: str) -> list[str]:
    """The packages Python runs before it imports ``name`` (below the root ``jvae``)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _graph() -> dict[str, set[str]]:
    """Module -> the jvae modules it imports (deferred imports inside functions too).

    Importing ``P.sub`` from outside package ``P`` first runs ``P/__init__.py``,
    which imports the rest of ``P``: such an import is an arrow to ``P`` as well,
    so a cycle through a package's re-exports is a cycle here too.
    """
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from P import sub`` imports the module P.sub; ``from M import x``, M.
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target not in modules:
                    continue
                deps.add(target)
                deps |= {p for p in _packages(target) if not (name + ".").startswith(p + ".")}
        deps.discard(name)
        graph[name] = deps
    return graph


def _match(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(name: str) -> int | None:
    """Index of ``name``'s layer in :data:`LAYERS` (0 is the top), or None."""
    return next((i for i, (_, prefixes) in enumerate(LAYERS) if _match(name, prefixes)), None)


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _modules() if m != "jvae" and _layer(m) is None)
    assert not unplaced, f"add these modules' prefixes to LAYERS: {unplaced}"


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
            for m, deps in sorted(graph.items()) if m != "jvae"
            for d in sorted(deps) if d != "jvae" and _layer(d) < _layer(m)]


def _side_by_side_imports(graph: dict[str, set[str]]) -> list[str]:
    offenders = []
    for areas in SIDE_BY_SIDE:
        for area, prefixes in areas.items():
            others = [p for a, ps in areas.items() if a != area for p in ps]
            offenders += [f"{m} ({area}) imports {d}" for m, deps in sorted(graph.items())
                          if _match(m, prefixes) for d in sorted(deps) if _match(d, others)]
    return offenders


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep == "jvae":  # the root's curated names are imported by none of its modules
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_import_runs_back_up():
    assert not _upward_imports(_graph())


def test_areas_side_by_side_do_not_import_each_other():
    assert not _side_by_side_imports(_graph())


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_rules_catch_what_they_forbid():
    """Each check flags an arrow that breaks it, added to the real graph."""
    graph = _graph()
    assert _layer("jvae.train") == 0 and _layer("jvae.train_state") == 1
    up = {**graph, "jvae.terms.vq": graph["jvae.terms.vq"] | {"jvae.training.program"}}
    assert _upward_imports(up) == ["jvae.terms.vq (objectives, nets, datasets) imports "
                                   "jvae.training.program (training)"]
    side = {**graph, "jvae.layers.heads": graph["jvae.layers.heads"] | {"jvae.terms.masked"}}
    assert _side_by_side_imports(side) == ["jvae.layers.heads (nets) imports jvae.terms.masked"]
    loop = {**graph, "jvae.base": {"jvae.model"}}
    assert _cycle(loop) in (["jvae.base", "jvae.model", "jvae.base"],
                            ["jvae.model", "jvae.base", "jvae.model"])


def test_base_is_the_bottom_layer():
    assert _graph()["jvae.base"] == set()


def test_the_root_namespace_imports_only_the_library():
    application = [d for d in _graph()["jvae"] if _layer(d) == 0]
    assert not application, application


def test_settings_do_not_import_the_train_program():
    assert "jvae.training.program" not in _graph()["jvae.app.config"]


def test_packages_export_their_names():
    """Each package's ``__all__`` holds its modules' public names (or, where those
    repeat from module to module, the modules), each the object its module defines."""
    modules = _modules()
    packages = sorted(m for m, p in modules.items() if p.name == "__init__.py" and m != "jvae")
    for package in packages:
        face = importlib.import_module(package)
        assert face.__all__ == sorted(face.__all__), package
        for sub in sorted(m for m in modules if m.rsplit(".", 1)[0] == package
                          and modules[m].name != "__init__.py"):
            module = importlib.import_module(sub)
            short = sub.rsplit(".", 1)[1]
            if short in face.__all__:
                assert getattr(face, short) is module
                continue
            missing = [n for n in module.__all__ if n not in face.__all__]
            assert not missing, f"{package} does not export {sub}'s {missing}"
            assert all(getattr(face, n) is getattr(module, n) for n in module.__all__), sub


def test_the_top_level_namespace_is_small_sorted_and_explicit():
    import jvae
    assert jvae.__all__ == sorted(jvae.__all__)
    assert 15 <= len(jvae.__all__) <= 25
    assert all(hasattr(jvae, name) for name in jvae.__all__)
