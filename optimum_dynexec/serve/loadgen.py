"""An async load generator for a running server: requests/s and latency percentiles at a given concurrency.

    python -m optimum_dynexec.serve.loadgen http://127.0.0.1:8000 --path /predict \
        --body '{"inputs": "what a lovely day"}' --concurrency 1 4 16 --requests 200

In Python: `asyncio.run(run_load(url, "/predict", bodies, concurrency=16, requests=200))` returns a `LoadResult`
(the serving benchmark calls it once per concurrency, technique on and off).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class LoadResult:
    """What one load run measured.

    Attributes:
        concurrency (`int`), requests (`int`): the run's shape.
        ok (`int`): 2xx answers; `statuses` counts every status (0 for a transport error).
        seconds (`float`): wall time of the run.
        requests_per_s (`float`): `ok / seconds`.
        latency_ms (`dict`): p50, p90, p99, mean and max of the successful requests.
        completion_tokens (`int`), tokens_per_s (`float`): from the responses' `usage` (generation), else 0.
    """

    concurrency: int
    requests: int
    ok: int
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float]
    completion_tokens: int = 0
    tokens_per_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {k: float("nan") for k in ("p50", "p90", "p99", "mean", "max")}
    ms = np.asarray(latencies) * 1000.0
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }


async def run_load(
    base_url: str,
    path: str,
    bodies: list[dict],
    concurrency: int,
    requests: int,
    api_key: str | None = None,
    timeout: float = 300.0,
) -> LoadResult:
    """Sends `requests` POSTs of `bodies` (cycled) to `base_url + path`, `concurrency` at a time (closed loop: each
    client sends its next request when the last one answered).

    Args:
        base_url (`str`): e.g. `"http://127.0.0.1:8000"`.
        path (`str`): e.g. `"/predict"` or `"/v1/completions"`.
        bodies (`list[dict]`): the JSON bodies to send, in turn.
        concurrency (`int`): clients at once.
        requests (`int`): requests in all.
        api_key (`str`, *optional*): sent as `Authorization: Bearer`.
        timeout (`float`): seconds per request.

    Raises:
        `ValueError`: for no bodies, or a concurrency or request count below 1.
    """
    if not bodies or concurrency < 1 or requests < 1:
        raise ValueError(
            f"Need bodies, concurrency >= 1 and requests >= 1; got {len(bodies)}, {concurrency}, {requests}."
        )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    order = itertools.islice(itertools.cycle(bodies), requests)
    lock = asyncio.Lock()
    latencies: list[float] = []
    statuses: Counter = Counter()
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while True:
            async with lock:
                body = next(order, None)
            if body is None:
                return
            start = time.perf_counter()
            try:
                response = await http.post(path, json=body)
            except httpx.HTTPError as error:
                logger.warning("request failed: %r", error)
                statuses[0] += 1
                continue
            elapsed = time.perf_counter() - start
            statuses[response.status_code] += 1
            if response.is_success:
                latencies.append(elapsed)
                body = response.json() if "json" in response.headers.get("content-type", "") else None
                usage = body.get("usage") if isinstance(body, dict) else None
                if isinstance(usage, dict):
                    tokens += int(usage.get("completion_tokens", 0))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ok = len(latencies)
    return LoadResult(
        concurrency=concurrency,
        requests=requests,
        ok=ok,
        seconds=seconds,
        requests_per_s=ok / seconds,
        latency_ms=_percentiles(latencies),
        completion_tokens=tokens,
        tokens_per_s=tokens / seconds,
        statuses=dict(statuses),
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m optimum_dynexec.serve.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--path", required=True, help="e.g. /predict, /v1/completions")
    p.add_argument("--body", action="append", required=True, type=json.loads, help="a JSON body (repeatable)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--api-key")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO")
    for concurrency in args.concurrency:
        result = asyncio.run(run_load(args.url, args.path, args.body, concurrency, args.requests, args.api_key))
        logger.info("%s", json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
