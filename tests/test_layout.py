"""The package's layout holds: data flows one way (files -> data -> model -> run -> training / evaluation -> app),
no module imports one above it, and there is no import circle. Read from the source, imports inside functions included."""
import ast

from conftest import ROOT

# Each top-level piece of vae/ and its layer: a module may import its own layer or those below, never above.
LAYERS = {
    "errors": 0, "files": 0, "config": 0, "progress": 0, "pictures": 0, "backend": 0, "cli": 0, "__init__": 0,
    "data": 1, "model": 2, "priors": 2, "run": 3, "training": 4, "evaluation": 4, "app": 5, "export": 5,
}


def vae_imports() -> dict[str, set[str]]:
    """{module: the vae modules it imports}, module names dotted ("vae.model.vae")."""
    graph = {}
    for path in (ROOT / "vae").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vae"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("vae")}
        graph[name] = found - {name}
    return graph


def piece(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_no_module_imports_a_layer_above_its_own():
    upward = [(m, i) for m, imports in vae_imports().items() for i in imports
              if i != "vae" and LAYERS[piece(i)] > LAYERS[piece(m)]]
    assert upward == []
    # Training and evaluation are siblings: neither needs the other.
    crossing = [(m, i) for m, imports in vae_imports().items() for i in imports
                if {piece(m), piece(i)} == {"training", "evaluation"}]
    assert crossing == []


def test_there_is_no_import_circle():
    graph = vae_imports()
    state = {}

    def visit(module, path):
        if state.get(module) == "open":
            raise AssertionError(" -> ".join([*path, module]))
        if state.get(module) == "done":
            return
        state[module] = "open"
        for imported in graph.get(module, ()):
            if imported in graph and not (module.startswith(imported + ".") or imported == "vae"):
                visit(imported, [*path, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])
    assert len(graph) > 25  # the whole package was read
