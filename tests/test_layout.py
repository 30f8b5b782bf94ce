"""
Tests for echokit's layout: imports run one way, from the command line down to the core.

The layers, top to bottom: C{cli} and C{demo}; C{measure}; C{client} and C{server};
C{transports}; C{runtime}; the core (C{errors}, C{echo}). A module may import from its own
layer and the ones below, never above; the core imports no Twisted. Every import counts,
including the ones inside functions (echokit defers many imports to keep start-up fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "echokit"

#: Each layer, and the echokit layers it may import from (besides its own).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "runtime": {"core"},
    "transports": {"core", "runtime"},
    "client": {"core", "runtime", "transports"},
    "server": {"core", "runtime", "transports"},
    "measure": {"core", "runtime", "transports", "client", "server"},
    "face": {"core", "runtime", "transports", "client", "server", "measure"},
}

CORE = {"errors", "echo", "__init__"}
FACE = {"cli", "demo", "__main__"}


def layer_of(module: str) -> str:
    """The layer of an echokit module name (C{echokit.transports.stream} -> transports)."""
    parts = module.split(".")
    assert parts[0] == "echokit", module
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    if parts[1] in FACE:
        return "face"
    assert parts[1] in ALLOWED, f"{module}: echokit.{parts[1]} is in no layer"
    return parts[1]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """The dotted name of the module at C{path} inside C{package}'s tree."""
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    """Every module C{path} imports, at any depth of its code."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import; echokit uses absolute ones"
            # "from echokit.transports import tls" imports the module echokit.transports.tls
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            found.append(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """The imports of C{path} that run against the layers."""
    own = layer_of(module_name(path, package))
    wrong = []
    for imported in imports_of(path):
        top = imported.split(".")[0]
        if own == "core" and top == "twisted":
            wrong.append(f"{imported} (the core holds no I/O)")
        if top != "echokit" or imported in ("echokit", "echokit.__version__"):
            continue
        other = layer_of(imported)
        if other != own and other not in ALLOWED[own]:
            wrong.append(f"{imported} ({own} may not import from {other})")
    return wrong


class LayoutTests:
    @pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
    def test_imports_run_one_way(self, path: Path) -> None:
        """No module imports from a layer above its own; the core imports no Twisted."""
        assert violations(path) == []

    def test_the_check_sees_an_upward_import(self, tmp_path: Path) -> None:
        """A transport importing the server is caught (the check can fail)."""
        bad = PACKAGE / "transports" / "stream.py"
        source = bad.read_text() + "\n\ndef f():\n    from echokit.server.serve import serve\n"
        copy = tmp_path / "echokit" / "transports" / "stream.py"
        copy.parent.mkdir(parents=True)
        copy.write_text(source)
        assert violations(copy, tmp_path / "echokit") == [
            "echokit.server.serve.serve (transports may not import from server)",
            "echokit.server.serve (transports may not import from server)",
        ]

    def test_the_check_sees_twisted_in_the_core(self, tmp_path: Path) -> None:
        """The core importing Twisted is caught."""
        copy = tmp_path / "echokit" / "echo.py"
        copy.parent.mkdir(parents=True)
        copy.write_text((PACKAGE / "echo.py").read_text() + "\nimport twisted.internet\n")
        assert violations(copy, tmp_path / "echokit") == [
            "twisted.internet (the core holds no I/O)"
        ]

    def test_every_module_has_a_docstring(self) -> None:
        """Every module says what it is for."""
        missing = [
            str(p.relative_to(PACKAGE))
            for p in MODULES
            if ast.get_docstring(ast.parse(p.read_text())) is None and p.name != "__main__.py"
        ]
        assert missing == []

    def test_no_import_cycle_between_modules(self) -> None:
        """echokit's modules import each other without a cycle (module-level or deferred)."""
        graph = {
            module_name(p): {
                i for i in imports_of(p) if i.startswith("echokit.") and i != module_name(p)
            }
            for p in MODULES
        }
        names = set(graph)
        graph = {m: {i for i in deps if i in names} for m, deps in graph.items()}
        state: dict[str, int] = {}
        cycles: list[list[str]] = []

        def visit(module: str, trail: list[str]) -> None:
            state[module] = 1
            for dep in sorted(graph[module]):
                if state.get(dep) == 1:
                    cycles.append([*trail[trail.index(dep) :], dep] if dep in trail else [dep])
                elif dep not in state:
                    visit(dep, [*trail, dep])
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module, [module])
        assert cycles == []
