"""`serve` is an optional extra: the library never imports it, and the embedded server never imports Ray."""

import subprocess
import sys

from test_boundary import PACKAGE, imported_modules, library_modules


def test_no_library_module_outside_serve_imports_serve():
    for module in library_modules():
        if module == "optimum_dynexec.serve" or module.startswith("optimum_dynexec.serve."):
            continue
        path = PACKAGE.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        bad = [name for name, _ in imported_modules(path, module) if name.startswith("optimum_dynexec.serve")]
        assert not bad, f"{path} imports {bad}"
        assert "optimum_dynexec.serve" not in path.read_text(), f"{path} names the serve package"


def test_the_embedded_server_does_not_import_ray():
    script = (
        "import sys\n"
        "import optimum_dynexec.serve.cli\n"
        "from optimum_dynexec.serve import build_fastapi_app\n"
        "assert 'ray' not in sys.modules, 'the embedded server imported ray'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
