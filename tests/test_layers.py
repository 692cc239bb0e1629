"""The package's imports run one way: foundation -> domain -> adapters -> workflows and CLI.

An AST walk over every module of the three source roots (``python/openmmflash``, ``plugin/``, ``integrators/``)
collects every import of an ``openmmflash`` module, also those inside functions, maps each module to its layer and
checks that no module imports a layer above its own, and that the import graph has no cycle between files or
between folders. Failures list the offending edges.
"""

import ast
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SOURCE_ROOTS = {"openmmflash": "python/openmmflash", "openmmflash.plugin": "plugin",
                "openmmflash.integrators": "integrators"}

# Layer of a module: the first (longest) matching prefix wins. Higher numbers may import lower ones, never the
# reverse; modules of one layer may import each other as long as no cycle forms.
LAYERS = [
    ("openmmflash.stack", 0, "foundation"),
    ("openmmflash.units", 0, "foundation"),
    ("openmmflash.neighbors", 0, "foundation"),
    ("openmmflash.blockstats", 0, "foundation"),
    ("openmmflash.importorder", 0, "foundation"),
    ("openmmflash.distributed", 0, "foundation"),
    ("openmmflash.schnet", 1, "domain"),
    ("openmmflash.cg", 1, "domain"),
    ("openmmflash.compactmd", 1, "domain"),
    ("openmmflash.gaq", 1, "domain"),
    ("openmmflash.mlcg", 1, "domain"),
    ("openmmflash.plugin", 2, "adapter (Force)"),
    ("openmmflash.integrators", 3, "adapter (Integrator)"),
    ("openmmflash.workflows", 4, "workflows"),
    ("openmmflash.demo", 4, "workflows"),
    ("openmmflash.doctor", 4, "workflows"),
    ("openmmflash.cli", 5, "cli"),
    ("openmmflash.commands", 5, "cli"),
    ("openmmflash.__main__", 5, "cli"),
]
# Command-line modules live with their workflow but belong to the CLI layer.
CLI_MODULE = "cli"


def _modules():
    """{module name: file path} for every .py file of the three roots."""
    found = {}
    for package, rel in SOURCE_ROOTS.items():
        base = os.path.join(ROOT, rel)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__")) and d != "models"]
            for filename in filenames:
                if not filename.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(dirpath, filename), base)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                name = ".".join([package] + parts)
                # a nested root (plugin/, integrators/) wins over the library root
                found.setdefault(name, os.path.join(dirpath, filename))
    return found


def layer_of(module):
    """(rank, label) of an ``openmmflash`` module; ``None`` for the top package (its exports are lazy strings)."""
    if module == "openmmflash":
        return None
    if module.rsplit(".", 1)[-1] == CLI_MODULE:
        return 5, "cli"
    best = None
    for prefix, rank, label in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, rank, label)
    if best is None:
        raise AssertionError(f"module {module} is not assigned to a layer: add it to LAYERS in {__file__}")
    return best[1], best[2]


def _resolve(name, modules):
    """The module an imported dotted name refers to (a name imported from a module maps to that module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(modules=None):
    """[(importer, imported, lineno)] over all ``openmmflash`` imports, including those inside functions."""
    modules = modules or _modules()
    edges = []
    for name, path in sorted(modules.items()):
        is_package = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{alias.name}" for alias in node.names] if mod else []
            for target in targets:
                if not target.startswith("openmmflash"):
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.append((name, resolved, node.lineno))
    return edges


def _folder(module):
    """The package a module sits in (a package's __init__ counts as inside the package)."""
    path = _modules_cache()[module]
    return module if path.endswith("__init__.py") else module.rpartition(".")[0]


_CACHE = {}


def _modules_cache():
    if "m" not in _CACHE:
        _CACHE["m"] = _modules()
    return _CACHE["m"]


def _cycles(graph):
    """Strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def _describe(component, graph_edges):
    members = set(component)
    lines = [f"  {a} -> {b}" + (f"  (line {n})" if n else "")
             for a, b, n in graph_edges if a in members and b in members]
    return "cycle among " + ", ".join(component) + ":\n" + "\n".join(sorted(set(lines)))


def test_every_module_has_a_layer():
    for module in _modules_cache():
        layer_of(module)


def test_no_upward_import():
    bad = []
    for importer, imported, lineno in import_edges(_modules_cache()):
        src, dst = layer_of(importer), layer_of(imported)
        if src is None or dst is None:
            continue
        if dst[0] > src[0]:
            bad.append(f"  {importer} ({src[1]}) imports {imported} ({dst[1]}) at line {lineno}")
    assert not bad, "imports that go up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycle_between_files():
    edges = [(a, b, n) for a, b, n in import_edges(_modules_cache()) if b != "openmmflash"]
    graph = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(_describe(c, edges) for c in cycles)


def test_no_import_cycle_between_folders():
    edges = []
    for a, b, _ in import_edges(_modules_cache()):
        if b == "openmmflash":
            continue
        fa, fb = _folder(a), _folder(b)
        # a package importing its own subpackage, or a module its parent package, is not a folder edge
        if fa == fb or fb.startswith(fa + ".") or fa.startswith(fb + "."):
            continue
        edges.append((fa, fb, 0))
    graph = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(_describe(c, edges) for c in cycles)


def _calls_custom_ops(path):
    """Line numbers where a module reaches ``torch.ops.openmmflash`` (the fast path of the adapters)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "openmmflash" and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ops" and isinstance(node.value.value, ast.Name) and node.value.value.id == "torch"]


def test_foundation_and_domain_stay_plain_torch():
    """The models are plain PyTorch: only the adapters (plugin: ``FlashSchNetOps``) call the custom ops."""
    bad = [f"  {module} line {line}" for module, path in sorted(_modules_cache().items())
           if (layer_of(module) or (0,))[0] <= 1 for line in _calls_custom_ops(path)]
    assert not bad, "torch.ops.openmmflash called below the adapters:\n" + "\n".join(bad)


def test_custom_op_detector_sees_a_call(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n\ny = torch.ops.openmmflash.pair_rowptr\n")
    assert _calls_custom_ops(str(probe)) == [3]


@pytest.mark.parametrize("module, expected", [
    ("openmmflash.stack", 0), ("openmmflash.schnet.model", 1), ("openmmflash.plugin.torchforce", 2),
    ("openmmflash.integrators", 3), ("openmmflash.cli", 5), ("openmmflash.compactmd.cli", 5)])
def test_layer_map(module, expected):
    assert layer_of(module)[0] == expected
