"""`serve` is an optional extra: the library never imports it, and the embedded server never imports Ray."""

import ast

from test_boundary import PACKAGE, imported_modules, library_modules


def module_path(module: str):
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_no_library_module_outside_serve_imports_serve():
    for module in library_modules():
        if module == "optimum_dynexec.serve" or module.startswith("optimum_dynexec.serve."):
            continue
        path = module_path(module)
        bad = [name for name, _ in imported_modules(path, module) if name.startswith("optimum_dynexec.serve")]
        assert not bad, f"{path} imports {bad}"
        assert "optimum_dynexec.serve" not in path.read_text(), f"{path} names the serve package"


def third_party_imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_embedded_server_does_not_import_ray():
    """Everything `python -m optimum_dynexec.serve` imports of this package (the package's `__init__` resolves
    `app` and `build_app` lazily) names no Ray module."""
    modules = set(library_modules())
    seen, todo = set(), ["optimum_dynexec.serve", "optimum_dynexec.serve.__main__"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        assert "ray" not in third_party_imports(module_path(module)), f"{module} imports ray"
        for name, _ in imported_modules(module_path(module), module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                todo.append(name)
    assert "optimum_dynexec.serve.server" in seen and "optimum_dynexec.serve.ray_app" not in seen
