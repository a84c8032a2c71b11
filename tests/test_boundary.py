"""The library never imports its proving ground (`optimum_dynexec.reference`); its modules import without cycles."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "optimum_dynexec"
# lazy imports are the point of these files: the CLI loads the world in `run()`, the package root on first access
LAZY_IMPORTS_ALLOWED = {"__init__.py", "commands/export_dynexec.py"}


def library_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "reference":
            continue
        parts = ["optimum_dynexec", *rel.with_suffix("").parts]
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_modules(path: Path, module: str) -> list[tuple[str, bool]]:
    """`(imported module, at module level)` for every import of this package in `path`."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("optimum_dynexec"):
                out.append((name, id(node) in top))
    return out


def test_every_library_module_imports_without_the_proving_ground():
    script = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'optimum_dynexec.reference' or name.startswith('optimum_dynexec.reference.'):\n"
        "            raise ImportError('the library imported the proving ground: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {library_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "import optimum_dynexec\n"
        "for name in optimum_dynexec.__all__:\n"
        "    getattr(optimum_dynexec, name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_library_sources_name_no_proving_ground_module():
    for module in library_modules():
        path = PACKAGE.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        bad = [name for name, _ in imported_modules(path, module) if name.startswith("optimum_dynexec.reference")]
        assert not bad, f"{path} imports {bad}"


def test_library_imports_form_no_cycle_and_only_the_cli_imports_lazily():
    modules = set(library_modules())
    graph: dict[str, set[str]] = {}
    for module in modules:
        path = PACKAGE.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        rel = str(path.relative_to(PACKAGE))
        edges = set()
        for name, top_level in imported_modules(path, module):
            if not top_level:
                assert rel in LAZY_IMPORTS_ALLOWED, f"{rel} imports {name} inside a function"
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and name != "optimum_dynexec":
                edges.add(name)
        graph[module] = edges

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
