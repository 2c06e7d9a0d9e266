"""Data flows one way: nothing under clip_agiqa/data imports the model side, directly or through another module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "clip_agiqa"
# The model side: the network, the training task, their saving and loading, scoring and the command line.
MODEL_SIDE = {"model", "module", "export", "backbone", "prompts", "heads", "scoring", "cli", "benchmark",
              "compare", "callbacks", "reporting", "metrics", "saved", "config", "scores_file"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """The clip_agiqa modules a file (module ``name``) imports anywhere (top level or in functions,
    ``from . import x`` included)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(p for p in (base, node.module) if p) if node.level else (node.module or "")
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # from . import model
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(
                ("clip_agiqa.", ".")):
            found.add(node.value if node.value.startswith("clip_agiqa") else f"{package}{node.value}")  # lazy names
    return {target for target in found if target.startswith("clip_agiqa")}


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules and t != name} for name, path in modules.items()}


def reached_from(start: str, graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Every module reached from start, with the chain of imports that reaches it."""
    trails, todo = {start: [start]}, [start]
    while todo:
        name = todo.pop()
        for target in graph[name]:
            if target not in trails:
                trails[target] = [*trails[name], target]
                todo.append(target)
    return trails


def model_side(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] == "clip_agiqa" and parts[1] in MODEL_SIDE


def test_data_imports_nothing_from_the_model_side():
    graph = package_graph()
    data_modules = [name for name in graph if name == "clip_agiqa.data" or name.startswith("clip_agiqa.data.")]
    assert len(data_modules) > 10
    breaches = [" -> ".join(trail) for start in data_modules
                for target, trail in reached_from(start, graph).items() if model_side(target)]
    assert not breaches, "data reaches the model side:\n" + "\n".join(breaches)


def test_the_rule_sees_imports_inside_functions_and_lazy_names(tmp_path):
    """The walker must see the forms a breach can take, or the rule above could pass while broken."""
    sample = tmp_path / "probe.py"
    sample.write_text("def f():\n    from ..model import CLIPAGIQAModel\n"
                      "def g():\n    from .. import scoring\n"
                      "NAMES = {'x': 'clip_agiqa.heads'}\n")
    found = imports_of(sample, "clip_agiqa.data.probe")
    assert {"clip_agiqa.model", "clip_agiqa.scoring", "clip_agiqa.heads"} <= found
