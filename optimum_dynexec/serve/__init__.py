"""Serve a dynexec folder over HTTP (FastAPI on uvicorn), or scale it out as a Ray Serve deployment.

An optional extra (`pip install optimum-dynexec[serve]`): the library never imports this package.

- `python -m optimum_dynexec.serve FOLDER` (or `optimum-dynexec-serve FOLDER`): the embedded server.
- `build_fastapi_app(folder, ...)`: the ASGI app itself.
- `serve run optimum_dynexec.serve:app folder=FOLDER num_replicas=2`, or `build_app(folder, num_replicas=2)`: the
  same app on Ray Serve.

The names are resolved on first use, so that the embedded server never imports Ray.
"""

import importlib

_LAZY = {
    "build_fastapi_app": ".server",
    "ServeSettings": ".server",
    "build_app": ".ray_app",
    "app": ".ray_app",
    "EarlyExitBatchPredictor": ".ray_data",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
