"""The import contract: the architecture the package tree shows, checked on the source itself.

Every `import` statement of every module counts, the ones inside functions included (a lazy import still runs when
that function does). The rules:

1. the pure core (the vocabulary: tasks, answers, filters, prompts, records, stats, config, the search space, the
   report...) never reaches Ray, vLLM, an engine, training, generation, the evaluator or the cluster code, at any depth;
2. the report never reaches training or models: it renders a run directory from its files alone;
3. no import cycle between cotgap_ray modules (a package importing its own submodules is not a cycle);
4. importing a CLI module or a resource planner does not start importing Ray, torch, vLLM or sympy (math-verify's,
   answers.py loads it on the first LaTeX answer): `--help` stays instant.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cotgap_ray"

PURE_CORE = ["cotgap_ray.answers", "cotgap_ray.numbers", "cotgap_ray.math_answers", "cotgap_ray.config",
             "cotgap_ray.errors", "cotgap_ray.filters", "cotgap_ray.naturalness", "cotgap_ray.prompts",
             "cotgap_ray.proxies", "cotgap_ray.records", "cotgap_ray.sft", "cotgap_ray.stats", "cotgap_ray.hardware",
             "cotgap_ray.tasks", "cotgap_ray.tasks.splits", "cotgap_ray.tasks.gsm8k", "cotgap_ray.tasks.file",
             "cotgap_ray.tasks.reasoning_gym", "cotgap_ray.search.space", "cotgap_ray.evaluation.paired",
             "cotgap_ray.report", "cotgap_ray.report_pairs", "cotgap_ray.report_pairs_compare",
             "cotgap_ray.report_cli"]
NOT_IN_CORE = ("ray", "vllm", "cotgap_ray.engines", "cotgap_ray.training", "cotgap_ray.generation",
               "cotgap_ray.evaluation.evaluator", "cotgap_ray.evaluation.scoring", "cotgap_ray.cluster",
               "cotgap_ray.search.run", "cotgap_ray.search.tuning", "cotgap_ray.search.trial",
               "cotgap_ray.search.confirm", "cotgap_ray.search.resources")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """Every module `module`'s source names in an import statement (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


def _internal_edges(module: str) -> set[str]:
    """cotgap_ray modules imported by `module`, with the parent packages an import runs (cotgap_ray.a.b runs
    cotgap_ray.a's __init__), minus `module` itself."""
    edges = set()
    for name in _imports(module):
        parts = name.split(".")
        for k in range(2, len(parts) + 1):
            if ".".join(parts[:k]) in MODULES:
                edges.add(".".join(parts[:k]))
    return edges - {module}


def _reach(module: str) -> set[str]:
    """Everything `module` may import, transitively: cotgap_ray modules and third-party names."""
    seen, todo, external = set(), [module], set()
    while todo:
        current = todo.pop()
        external |= {n for n in _imports(current) if not n.startswith("cotgap_ray")}
        for nxt in _internal_edges(current):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen | external


def _violations(module: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in _reach(module) if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_the_contract_names_real_modules():
    assert set(PURE_CORE) <= set(MODULES), set(PURE_CORE) - set(MODULES)
    # the check can fail: modules that do import Ray or training are caught
    assert "ray" in _violations("cotgap_ray.search.tuning", ("ray",))
    assert "cotgap_ray.training.ray_train" in _violations("cotgap_ray.search.trial", NOT_IN_CORE)


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_never_reaches_ray_engines_or_training(module):
    assert _violations(module, NOT_IN_CORE) == []


def test_the_report_never_reaches_training_or_models():
    for module in ("cotgap_ray.report", "cotgap_ray.report_pairs", "cotgap_ray.report_pairs_compare",
                   "cotgap_ray.report_cli"):
        assert _violations(module, ("cotgap_ray.training", "cotgap_ray.models")) == [], module


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), edges from explicit imports only: the
    implicit edge a submodule has to its own package's __init__ is left out (a package importing its submodules
    for re-export is the normal layout, not a cycle)."""
    def edges(m):
        return {e for e in _internal_edges(m) if not m.startswith(e + ".")}

    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    return out


def test_no_import_cycles():
    assert _cycles() == []


CHEAP = ["cotgap_ray.search.run", "cotgap_ray.generate", "cotgap_ray.evaluate", "cotgap_ray.distill",
         "cotgap_ray.report", "cotgap_ray.search.resources", "cotgap_ray.evaluation.evaluator",
         "cotgap_ray.generation.pipeline", "cotgap_ray.cluster", "cotgap_ray.config", "cotgap_ray.records",
         "cotgap_ray.cli", "cotgap_ray.catalog", "cotgap_ray.cluster.show", "cotgap_ray.validate"]


def test_importing_clis_and_planners_loads_no_heavy_library():
    code = ("import importlib, sys\n"
            f"for m in {CHEAP!r}: importlib.import_module(m)\n"
            "print(sorted(n for n in ('ray', 'torch', 'vllm', 'transformers', 'sympy', 'math_verify') "
            "if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
