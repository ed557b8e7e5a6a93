"""The package layout holds: no module-level import cycle, no oversized file, each package one concern."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parents[2] / "src" / "selfsynth"
MAX_LINES = 450
# models/ is the model backend and the text encoder, nothing else.
MODELS = {
    "precision_probe",
    "__init__",
    "augment",
    "backend",
    "batching",
    "chat",
    "decode",
    "devices",
    "embed",
    "features",
    "lora",
    "lora_dense",
    "merge",
    "model_dir",
    "pixel_memo",
    "processors",
    "sft",
    "train_checkpoint",
    "vlm",
    "vllm_engine",
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def module_graph(top_level_only: bool = True) -> dict[str, set[str]]:
    """Which selfsynth modules each module imports (at module level, or anywhere)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                deps |= {_resolve(a.name, mods) for a in node.names if a.name.startswith("selfsynth")}
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("selfsynth")
            ):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    deps.add(_resolve(full if full in mods else node.module, mods))
        deps -= {name, ""}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of module names, or [] if there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str]:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        state[v] = 2
        stack.pop()
        return []

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return []


def test_no_module_level_import_cycle():
    cycle = find_cycle(module_graph())
    assert not cycle, "module-level import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_file_over_the_limit():
    long = {
        str(f.relative_to(PKG)): n
        for f in PKG.rglob("*.py")
        if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_models_holds_only_the_backend_and_text_encoder():
    names = {f.stem for f in (PKG / "models").glob("*.py")}
    assert names <= MODELS, f"not backend modules: {sorted(names - MODELS)}"


def test_metrics_live_in_their_package():
    strays = sorted(
        f.name for f in PKG.glob("*.py") if f.stem.startswith("metrics") or f.stem == "general_eval"
    )
    assert not strays
