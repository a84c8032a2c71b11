"""Run an app on uvicorn in a background thread of this process (tests, notebooks, the serving benchmark).

with BackgroundServer(build_fastapi_app("minilm-dynexec")) as server:
    httpx.post(server.url + "/predict", json={"inputs": "what a lovely day"})
"""

from __future__ import annotations

import threading
import time

import uvicorn


class BackgroundServer:
    """uvicorn serving `app` on `host`, on a free port unless `port` is given, in a daemon thread.

    Args:
        app: the ASGI app (e.g. `build_fastapi_app(folder)`).
        host (`str`, defaults to `"127.0.0.1"`), port (`int`, defaults to 0: a free port).
        startup_timeout (`float`, defaults to 60): seconds to wait for the server to listen.

    Raises:
        `RuntimeError`: when the server does not start in time.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 60.0):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
        self.app, self.server = app, uvicorn.Server(config)
        self.host, self.startup_timeout = host, startup_timeout
        self.thread = threading.Thread(target=self.server.run, name="dynexec-uvicorn", daemon=True)
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The server did not start on {self.host} within {self.startup_timeout} s.")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
