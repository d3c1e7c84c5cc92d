"""The package's layout, read from its source: no module-level import cycle among roar's modules, few
modules directly in roar/, and the layers below the stages importing nothing above them (the data and
removal code loads no attribution library)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "roar"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The roar modules `name` imports when it is loaded: its top-level import statements (those inside
    functions run later, on a call), each resolved to the most specific module it names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: from the package, `level - 1` packages up
                base = ".".join([package.rsplit(".", node.level - 1)[0], base] if base else [package])
            # `from roar import saliency` imports the module roar.saliency; `from roar.x import y` imports
            # roar.x (y being a name in it, or a submodule of it).
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_checker_sees_imports_and_cycles():
    # Were the reader to find nothing, the test above could not fail.
    assert "roar.stages.specs" in GRAPH["roar.stages.checks"]
    assert "roar.config.schema" in GRAPH["roar.config.validate"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_few_modules_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += GRAPH[module]
    return seen


# Each layer, and what it must not reach at import time: the layers above it.
LAYERS = {
    "roar.errors": ("roar.",),
    "roar.conf": ("roar.",),
    "roar.runtime.files": ("roar.",),
    "roar.runtime.cache": ("roar.stages", "roar.tasks", "roar.cli", "roar.saliency", "roar.data"),
    "roar.removal": ("roar.data", "roar.saliency", "roar.models", "roar.stages", "roar.tasks", "roar.report"),
    "roar.data": ("roar.saliency", "roar.models", "roar.stages", "roar.tasks", "roar.report", "roar.cli"),
    "roar.models": ("roar.saliency", "roar.data", "roar.stages", "roar.tasks", "roar.report", "roar.cli"),
    "roar.saliency": ("roar.data", "roar.stages", "roar.tasks", "roar.report", "roar.cli", "roar.config"),
    "roar.report": ("roar.stages", "roar.tasks", "roar.cli", "roar.saliency"),
    "roar.stages": ("roar.tasks", "roar.cli"),
    "roar.tasks": ("roar.cli",),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_above_it(layer):
    above = sorted(m for m in reachable(layer) - {layer} if m.startswith(LAYERS[layer]))
    assert above == [], f"{layer} reaches {above}"


def test_the_data_and_removal_code_load_no_attribution_library():
    code = "import sys, roar.data, roar.removal; print(sorted({'captum', 'zennit'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
