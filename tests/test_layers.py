"""The package's imports point down its layers (see docs/design.rst) and form no cycle."""

import ast
import pathlib

import bayeslin

ROOT = pathlib.Path(bayeslin.__file__).parent

# Layer of each module; a module may import only from lower layers or from
# earlier modules of its own package (operators.features -> mlp_jacobian,
# torch_jacobian, dask).
LAYERS = {
    "_backend": 0,
    "_validation": 1,
    "_progress": 1,
    "likelihoods": 1,
    "operators": 2,
    "networks": 3,
    "solvers": 3,
    "_dask": 3,
    "posterior": 4,
    "evidence": 5,
    "linear_model": 6,
    "laplace": 6,
}


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _imports(path):
    """bayeslin modules imported by ``path`` (relative imports resolved), at any depth of the file."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, node.module]) if node.module else ".".join(base)
            out.add(target)
    return {t for t in out if t}


def _top(module):
    return module.split(".")[0]


def test_imports_point_down_the_layers():
    wrong = []
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if not name:  # bayeslin/__init__.py re-exports the estimators
            continue
        for target in _imports(path):
            if _top(target) == _top(name):
                continue  # inside one package: checked for cycles below
            if LAYERS[_top(target)] >= LAYERS[_top(name)]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycle():
    modules = {_module_name(p): p for p in ROOT.rglob("*.py") if _module_name(p)}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            # `from .x import name` may name a submodule of package x.
            if target in modules and target != name and not name.startswith(target + "."):
                deps.add(target)
        graph[name] = deps
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, dep])}")
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def test_import_does_not_load_torch():
    """PyTorch is optional: importing the package (and its network adapters) must not import it."""
    import subprocess
    import sys

    code = "import sys, bayeslin, bayeslin.networks, bayeslin.operators; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent).returncode == 0
