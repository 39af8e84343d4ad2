"""Import rules of the package (docs/architecture.md, "Imports"):
- no import cycles between the package's modules;
- imports of the package itself at the top of modules, except in the functions listed in
  LAZY_PACKAGE_IMPORTS, whose modules must stay cheap to import for `--help`;
- a function-level import of ray, mlflow or torch says why on its line or the line above.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("platform", "models", "jobs", "sweeps")
HEAVY = ("ray", "mlflow", "torch")

# (file, function) -> why the import waits for the call
_HELP = "keeps --help fast: the {} stack imports {}"
LAZY_PACKAGE_IMPORTS = {
    ("jobs/benchmark.py", "_config"): "deciding an auto canvas reads the data (numpy, PIL)",
    ("jobs/benchmark.py", "model"): "each subcommand pulls in its own heavy stack (torch)",
    ("jobs/benchmark.py", "gpu"): "each subcommand pulls in its own heavy stack (torch)",
    ("jobs/benchmark.py", "data"): "each subcommand pulls in its own heavy stack (torch, Ray)",
    ("jobs/benchmark.py", "scale"): "each subcommand pulls in its own heavy stack (torch, Ray)",
    (
        "jobs/benchmark.py",
        "tracking_load",
    ): "each subcommand pulls in its own heavy stack (Ray, MLflow)",
    (
        "jobs/benchmark.py",
        "train_overhead",
    ): "each subcommand pulls in its own heavy stack (torch, Ray)",
    ("jobs/convert_official.py", "main"): _HELP.format("conversion", "torch"),
    ("jobs/distill.py", "main"): _HELP.format("training", "torch/ray/mlflow"),
    ("jobs/eval_coco.py", "main"): _HELP.format("evaluation", "torch/ray"),
    ("jobs/eval_davis.py", "main"): _HELP.format("evaluation", "torch/ray"),
    ("jobs/predict.py", "main"): _HELP.format("prediction", "torch/ray"),
    ("jobs/prepare_data.py", "main"): _HELP.format("data preparation", "ray"),
    ("jobs/rehearse.py", "main"): _HELP.format("rehearsal", "torch/mlflow"),
    ("jobs/train_coco.py", "main"): _HELP.format("training", "torch/ray/mlflow"),
    ("jobs/train_davis.py", "main"): _HELP.format("training", "torch/ray/mlflow"),
    ("platform/sweep/cli.py", "main"): _HELP.format("sweep runner", "torch/ray/mlflow")
    + " (sweeps/*.py call this main)",
    (
        "platform/evaluation/predict.py",
        "map_with_actors",
    ): "the served MLflow model imports the module where Ray is not installed",
}


def _modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(("pix2seqd",) + parts)] = path
    return out


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + is_package]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str, node: ast.AST, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        mod = _absolute(module, node, is_package)
        # `from pkg import submodule` imports the submodule too
        return [mod] + [f"{mod}.{a.name}" for a in node.names]
    return []


def _function_imports(tree: ast.Module):
    """(function name, import node) of every import inside a function body."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield fn.name, node


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        inner = {id(n) for _, n in _function_imports(tree)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in inner:
                continue
            for target in _imported(name, node, path.name == "__init__.py"):
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_package_imports_at_the_top_except_listed():
    found = set()
    for name, path in _modules().items():
        rel = path.relative_to(ROOT).as_posix()
        for fn, node in _function_imports(ast.parse(path.read_text())):
            targets = _imported(name, node, path.name == "__init__.py")
            if any(t.startswith("pix2seqd") for t in targets):
                found.add((rel, fn))
    unexpected = found - set(LAZY_PACKAGE_IMPORTS)
    assert not unexpected, (
        f"function-level pix2seqd imports outside the allowed list: {sorted(unexpected)}"
    )
    assert not set(LAZY_PACKAGE_IMPORTS) - found, "allowed entries no longer used: remove them"


def test_lazy_heavy_imports_say_why():
    missing = []
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        for fn, node in _function_imports(ast.parse("\n".join(lines))):
            targets = _imported(name, node, path.name == "__init__.py")
            if not any(t.split(".")[0] in HEAVY for t in targets):
                continue
            here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in here and not above.startswith("#"):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} in {fn}")
    assert not missing, f"lazy ray/mlflow/torch imports without a reason: {missing}"
