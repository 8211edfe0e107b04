"""The package's structure: no import cycles, and the library never imports the application."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jvae"

# The application layer: settings, the command line and what only it uses.
APPLICATION = {"jvae.config", "jvae.flags", "jvae.cli", "jvae.__main__", "jvae.train",
               "jvae.evaluate", "jvae.memory", "jvae.runs", "jvae.images", "jvae.inference",
               "jvae.serve"}
APPLICATION_PACKAGES = ("jvae.dashboard",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        # Every import counts, deferred ones inside functions included.
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _is_application(name: str) -> bool:
    return name in APPLICATION or name.startswith(APPLICATION_PACKAGES)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_library_modules_never_import_the_application():
    graph = _graph()
    offenders = [f"{m} imports {d}" for m, deps in graph.items() if not _is_application(m)
                 and m != "jvae" for d in deps if _is_application(d)]
    assert not offenders, offenders


def test_base_is_the_bottom_layer():
    assert _graph()["jvae.base"] == set()


def test_the_top_level_namespace_is_small_sorted_and_explicit():
    import jvae
    assert jvae.__all__ == sorted(jvae.__all__)
    assert 15 <= len(jvae.__all__) <= 25
    assert all(hasattr(jvae, name) for name in jvae.__all__)
