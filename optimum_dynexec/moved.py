"""Deprecated module names of the proving ground, which moved into its own subpackage (`_NEW_HOME`).

`import optimum_dynexec.prepare` (and `python -m optimum_dynexec.prepare`) still work for one release: they warn
with a `FutureWarning` naming the new module and give that module itself. The library never imports these names;
this finder only maps them when a user's code asks for one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_NEW_HOME = "reference"  # the proving ground's subpackage, loaded only when a user asks for an old name
_PACKAGE = __name__.rpartition(".")[0]
_RELOCATED = {
    "prepare": "prepare",
    "prepare_diffusion": "diffusion",
    "austen": "austen",
    "fashion_mnist": "fashion_mnist",
    "benchmark": "benchmark",
    "benchmark.__main__": "benchmark.__main__",
    "benchmark.early_exit": "benchmark.early_exit",
    "benchmark.speculative": "benchmark.speculative",
    "benchmark.stepsaver": "benchmark.stepsaver",
    "benchmark.timing": "benchmark.timing",
    "demo": "demo",
    "training.judge": "judge",
    "training.text_to_image": "text_to_image",
}
MOVED = {f"{_PACKAGE}.{old}": f"{_PACKAGE}.{_NEW_HOME}.{new}" for old, new in _RELOCATED.items()}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name of `MOVED` to the module at its new place, with a `FutureWarning`."""

    def __init__(self) -> None:
        self._specs: dict = {}

    def find_spec(self, name: str, path=None, target=None):
        if name not in MOVED:
            return None
        real = importlib.util.find_spec(MOVED[name])
        return importlib.util.spec_from_loader(name, self, is_package=real.submodule_search_locations is not None)

    def create_module(self, spec):
        warnings.warn(
            f"`{spec.name}` moved to `{MOVED[spec.name]}`; the old name will be removed in a future release.",
            FutureWarning,
            stacklevel=2,
        )
        module = importlib.import_module(MOVED[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._specs[module.__name__]  # the import system set the old name's spec on it

    def get_code(self, name: str):
        """The new module's code, so that `python -m <old name>` runs it."""
        warnings.warn(f"`python -m {name}` moved to `python -m {MOVED[name]}`.", FutureWarning, stacklevel=2)
        return importlib.util.find_spec(MOVED[name]).loader.get_code(MOVED[name])

    def is_package(self, name: str) -> bool:
        return importlib.util.find_spec(MOVED[name]).submodule_search_locations is not None


def install() -> None:
    """Adds the finder to `sys.meta_path` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
