"""The code's structure: no import cycles among the project's modules (function-level imports included), and no
module importing another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "attacks", "models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(project module, names taken from it) for every import statement in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                names = [a.name for a in node.names]
                submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
                found += [(m, []) for m in submodules]
                others = [n for n in names if f"{node.module}.{n}" not in modules]
                if others or not submodules:  # `from pkg import sub` depends on pkg.sub, not on what pkg offers
                    found.append((node.module, others))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {target for target, _ in _imports(path, modules) if target != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = [(name, target, taken) for name, path in modules.items() for target, names in _imports(path, modules)
               for taken in names if taken.startswith("_") and target != name]
    assert private == []


# Modules that the config checks, the figures and the tools that read a store import: torch and ART load only
# where a model is built or attacked, so a config mistake is reported within a second and tables need no torch.
LIGHT = ("benchmark.schema", "benchmark.config_messages", "benchmark.validate", "benchmark.figures",
         "benchmark.artifacts", "attacks.evasion_attacks", "attacks.poisoning_attacks", "attacks.backdoor_attacks",
         "models")
HEAVY = ("torch", "art", "torchvision", "torch_pruning")


def heavy_imports(module: str, discover: bool = False) -> list[str]:
    """The heavy packages that importing `module` in a fresh interpreter loads (with `discover`, after its plugin
    registries imported every plugin module, as the config checks do)."""
    import subprocess
    import sys

    code = (f"import sys, importlib; m = importlib.import_module({module!r}); "
            + ("[v.discover() for v in list(vars(m).values()) if type(v).__name__ == 'Registry']; " if discover else "")
            + f"print(' '.join(sorted({{n.split('.')[0] for n in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_config_checks_figures_and_plugin_declarations_import_no_torch_or_art():
    found = {module: heavy_imports(module, discover=module.startswith("attacks.")) for module in LIGHT}
    assert {module: heavy for module, heavy in found.items() if heavy} == {}


def test_the_heavy_import_check_sees_a_heavy_import():
    assert "torch" in heavy_imports("benchmark.measure") and "art" in heavy_imports("attacks.evasion")


def test_verify_recomputes_without_art():
    """make verify re-measures with plain torch (its own PGD): ART's import time is not its to pay."""
    assert "art" not in heavy_imports("benchmark.tools.verify")
