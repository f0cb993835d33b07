"""Imports flow one way: every cm3jax module sits in a layer and imports only its own layer and
the ones below; the module graph has no cycle; and imports inside functions, of cm3jax itself,
appear only in the command-line tool (which keeps start-up light)."""

import ast
import pathlib

import pytest

import cm3jax

ROOT = pathlib.Path(cm3jax.__file__).parent

# Lowest first. A module belongs to the first layer with a prefix matching its dotted name.
LAYERS = (
    ("utilities", ("errors", "fileio", "manifest", "safetensors_io", "tfds_arrayrecord", "hostmem", "distributed",
                   "run_log", "training_loop", "checkpoints", "sharding", "benchmarking", "paths", "recipes",
                   "workdir_lock")),
    ("world and vocabulary", ("shapes", "vocab", "text_tokenizer", "chameleon.vocabulary", "chameleon.text",
                              "documents", "objectives", "prompts")),
    ("tokenizers, model, data", ("image_tokenizer", "model", "data", "config")),
    ("train, retrieval, sampling", ("train", "retrieval", "sampling", "chameleon")),
    ("eval", ("eval", "report", "demo")),
    ("cli", ("cli", "__main__")),
)


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("cm3jax",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        modules[name] = path
    return modules


MODULES = _modules()


def _layer(module: str) -> int:
    if module == "cm3jax":
        return 0
    dotted = module[len("cm3jax."):]
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(dotted == p or dotted.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add it to the layer it belongs to")


def _target(name: str) -> str:
    """The cm3jax module an imported name refers to (a module, or the module holding the name)."""
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported cm3jax module, inside a function?) for every import statement of `module`."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((_target(a.name), in_function) for a in child.names if a.name.startswith("cm3jax."))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and (child.module == "cm3jax" or child.module.startswith("cm3jax.")):
                for alias in child.names:
                    found.append((_target(f"{child.module}.{alias.name}"), in_function))
            visit(child, nested)

    visit(tree, False)
    return [(target, local) for target, local in found if target != module and target != "cm3jax"]


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_those_below(module):
    upward = [target for target, _ in GRAPH[module] if _layer(target) > _layer(module)]
    assert not upward, f"{module} ({LAYERS[_layer(module)][0]}) imports from a higher layer: {upward}"


def test_no_import_cycle():
    state, path = {}, []

    def walk(module):
        state[module] = "open"
        path.append(module)
        for target, _ in GRAPH[module]:
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target)
        path.pop()
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            walk(module)


def test_function_local_imports_of_cm3jax_only_in_the_cli():
    local = {module: sorted({t for t, inside in imports if inside}) for module, imports in GRAPH.items()
             if _layer(module) < len(LAYERS) - 1}
    assert not {m: t for m, t in local.items() if t}, "import these at the top of the module"


def test_the_graph_sees_real_edges():
    assert ("cm3jax.model.config", False) in GRAPH["cm3jax.model.decoder"]
    assert any(target == "cm3jax.train.loop" and inside for target, inside in GRAPH["cm3jax.cli.train"])
