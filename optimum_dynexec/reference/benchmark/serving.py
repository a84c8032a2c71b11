"""Serving the techniques over HTTP: requests/s and latency against concurrency, each technique on and off in the same
server, on the reference models.

- `early-exit`: the MiniLM sentiment classifier with exit heads behind `POST /predict`, `classify_inputs` tweets per
  request (default one), with
  `early_exit` true or false per request (the server's micro-batcher groups concurrent requests into one call).
- `speculative`: SmolLM2-135M behind `POST /v1/completions`, greedy, Austen passages to continue, with `speculative`
  true (prompt lookup) or false per request; tokens/s from the responses' usage. Measured once per server setting of
  `generation_batch` (`max_generation_batch`: 1 runs every request alone, more merges concurrent requests into one
  batched call); each embedded row records the mean rows per call the server reported.

The embedded server runs in a process of its own (`ServerProcess`, `python -m optimum_dynexec.serve`), as it does in
production: the load generator's Python never holds the server's interpreter lock (`server_process: false` runs it
in a thread of this process, as the tests do). With `ray_replicas`, the same loads run against the app on Ray Serve
with that many replicas (started here on a local Ray), to show how it scales on this machine. Writes JSON and a PNG
under `benchmarks/`, prints a table.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from optimum_dynexec.reference.benchmark.speculative import PRECISIONS, austen_prompts
from optimum_dynexec.reference.benchmark.timing import save_results
from optimum_dynexec.serve.background import BackgroundServer
from optimum_dynexec.serve.loadgen import run_load
from optimum_dynexec.serve.server import ServeSettings, build_fastapi_app

TECHNIQUES = ("early-exit", "speculative")


@dataclass
class ServingBenchConfig:
    """What `configs/serving.json` holds under `bench`."""

    techniques: list[str] = field(default_factory=lambda: list(TECHNIQUES))
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    classify_requests: int = 400
    classify_inputs: int = 1  # texts per /predict request (text-embeddings-inference clients often send a batch)
    generate_requests: int = 16
    max_tokens: int = 64
    prompt_words: int = 150
    precision: str = "default"
    ray_replicas: int = 2  # 0: no Ray Serve rows
    generation_batch: list[int] = field(default_factory=lambda: [1, 4])  # the server's max_generation_batch values
    server_process: bool = True  # the embedded server in a process of its own (False: a thread of this process)
    batch_speculation: bool = True  # shared generation calls speculate when the requests ask (the server's default)
    name: str = "serving"

    def __post_init__(self):
        if set(self.techniques) - set(TECHNIQUES):
            raise ValueError(f"Unknown techniques {sorted(set(self.techniques) - set(TECHNIQUES))}; use {TECHNIQUES}.")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency levels must be positive, got {self.concurrency}.")
        if min(self.classify_requests, self.classify_inputs, self.generate_requests, self.max_tokens) < 1:
            raise ValueError("request counts, classify_inputs and max_tokens must be positive.")
        if self.ray_replicas < 0:
            raise ValueError(f"ray_replicas must be 0 or more, got {self.ray_replicas}.")
        if not self.generation_batch or min(self.generation_batch) < 1:
            raise ValueError(f"generation_batch values must be positive, got {self.generation_batch}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose among {sorted(PRECISIONS)}.")

    @classmethod
    def from_file(cls, path: str | Path) -> "ServingBenchConfig":
        return cls(**json.loads(Path(path).read_text()).get("bench", {}))


def _workloads(config: ServingBenchConfig) -> dict[str, tuple[Path, str, dict[str, list[dict]], int]]:
    """Per technique: the folder, the endpoint, the bodies with the technique on and off, and the request count."""
    from optimum_dynexec.reference.prepare import early_exit_export_dir, smollm2_openvino_dir
    from optimum_dynexec.reference.sentiment import load_sentiment_splits

    workloads = {}
    if "early-exit" in config.techniques:
        n = config.classify_inputs
        texts = load_sentiment_splits()["test"].texts[: 200 * n]
        inputs = texts[:200] if n == 1 else [texts[i : i + n] for i in range(0, len(texts), n)]
        bodies = {switch: [{"inputs": t, "early_exit": switch} for t in inputs] for switch in (True, False)}
        workloads["early-exit"] = (early_exit_export_dir("fp32"), "/predict", bodies, config.classify_requests)
    if "speculative" in config.techniques:
        prompts = austen_prompts(4, config.prompt_words)["continue"]
        bodies = {
            switch: [
                {"prompt": p, "max_tokens": config.max_tokens, "temperature": 0, "speculative": switch}
                for p in prompts
            ]
            for switch in (True, False)
        }
        workloads["speculative"] = (smollm2_openvino_dir("fp32"), "/v1/completions", bodies, config.generate_requests)
    return workloads


def _batches(config: ServingBenchConfig, technique: str) -> list[int | None]:
    """The `max_generation_batch` settings a technique is served with (`None`: the setting does not apply)."""
    return list(config.generation_batch) if technique == "speculative" else [None]


def _batch_histogram(url: str) -> tuple[float, float]:
    """The count and sum of the server's `dynexec_generation_batch_size` histogram."""
    lines = httpx.get(url + "/metrics", timeout=30).text.splitlines()
    values = dict(line.rsplit(" ", 1) for line in lines if line.startswith("dynexec_generation_batch_size_"))
    return float(values.get("dynexec_generation_batch_size_count", 0)), float(
        values.get("dynexec_generation_batch_size_sum", 0)
    )


def _measure(
    url: str,
    path: str,
    bodies: dict,
    requests: int,
    levels: list[int],
    server: str,
    technique: str,
    batch: int | None = None,
    read_batches: bool = False,
):
    rows = []
    asyncio.run(run_load(url, path, bodies[True], concurrency=1, requests=4))  # warm-up: compile every request
    asyncio.run(run_load(url, path, bodies[False], concurrency=1, requests=4))
    label = technique if batch is None else f"{technique}, batch {batch}"
    for level in tqdm(levels, desc=f"{label}, {server}"):
        for switch in (True, False):  # on and off back to back at each level
            before = _batch_histogram(url) if read_batches and batch is not None else None
            result = asyncio.run(run_load(url, path, bodies[switch], concurrency=level, requests=requests))
            row = {"technique": technique, "server": server, "on": switch, "max_generation_batch": batch}
            if before is not None:
                after = _batch_histogram(url)
                calls = after[0] - before[0]
                row["mean_generation_batch"] = (after[1] - before[1]) / calls if calls else math.nan
            rows.append({**row, **result.to_dict()})
    return rows


def run_benchmark(config: ServingBenchConfig, output_dir: str | Path = "benchmarks") -> dict:
    """Runs every technique of `config` on the embedded server (and on Ray Serve); returns and writes the results."""
    ov_config = PRECISIONS[config.precision]
    rows = []
    workloads = _workloads(config)
    for technique, (folder, path, bodies, requests) in workloads.items():
        for batch in _batches(config, technique):
            settings = ServeSettings(
                ov_config=ov_config,
                max_queue=max(config.concurrency),
                max_generation_batch=batch or 1,
                batch_speculation=config.batch_speculation,
            )
            if config.server_process:
                server = ServerProcess(folder, settings)
            else:
                server = BackgroundServer(build_fastapi_app(folder, settings))
            with server:
                url, levels = server.url, config.concurrency
                rows += _measure(url, path, bodies, requests, levels, "embedded", technique, batch, True)
    if config.ray_replicas:
        rows += _ray_rows(config, workloads, ov_config)
    results = {"config": config.__dict__, "rows": rows, "summary": summarize(rows)}
    png = save_results(results, output_dir, config.name)
    plot(rows, png)
    return results


class ServerProcess:
    """`python -m optimum_dynexec.serve folder` with `settings`, on a free port of 127.0.0.1, in a process of its own;
    started on entering (once `/health` answers), stopped on leaving.

    Raises:
        `RuntimeError`: when the server exits or does not answer within `startup_timeout` seconds (with its log).
    """

    def __init__(self, folder: Path, settings: ServeSettings, startup_timeout: float = 300.0):
        self.folder, self.settings, self.startup_timeout = folder, settings, startup_timeout
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "ServerProcess":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        s = self.settings
        command = [sys.executable, "-m", "optimum_dynexec.serve", str(self.folder), "--port", str(port)]
        command += ["--max-queue", str(s.max_queue), "--max-generation-batch", str(s.max_generation_batch)]
        command += ["--max-batch-size", str(s.max_batch_size), "--log-level", "warning"]
        command += ["--batch-speculation" if s.batch_speculation else "--no-batch-speculation"]
        if s.ov_config:
            command += ["--ov-config", json.dumps(s.ov_config)]
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                self.log.seek(0)
                raise RuntimeError(f"The server did not start: {' '.join(command)}\n{self.log.read()[-3000:]}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ray_rows(config: ServingBenchConfig, workloads: dict, ov_config: dict) -> list[dict]:
    import ray
    from ray import serve

    from optimum_dynexec.serve.ray_app import build_app

    rows = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 8765})
        for technique, (folder, path, bodies, requests) in workloads.items():
            for batch in _batches(config, technique):
                app = build_app(
                    folder,
                    num_replicas=config.ray_replicas,
                    num_cpus=2 / config.ray_replicas,
                    ov_config=ov_config,
                    max_queue=max(config.concurrency),
                    max_generation_batch=batch or 1,
                    batch_speculation=config.batch_speculation,
                )
                serve.run(app, name=technique, route_prefix="/")
                server = f"Ray Serve x{config.ray_replicas}"
                url = "http://127.0.0.1:8765"
                rows += _measure(url, path, bodies, requests, config.concurrency, server, technique, batch)
                serve.delete(technique)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per technique, server, generation batch and concurrency: the on/off ratio of requests/s (tokens/s for
    generation), p50 and p99."""
    out = []

    def key(r: dict) -> tuple:
        return r["technique"], r["server"], r.get("max_generation_batch") or 0, r["concurrency"]

    for technique, server, batch, level in sorted({key(r) for r in rows}):
        on, off = (
            next(r for r in rows if key(r) == (technique, server, batch, level) and r["on"] == s)
            for s in (True, False)
        )
        metric = "tokens_per_s" if technique == "speculative" else "requests_per_s"
        out.append(
            {
                "technique": technique,
                "server": server,
                "max_generation_batch": batch or None,
                "concurrency": level,
                "metric": metric,
                "on": on[metric],
                "off": off[metric],
                "speedup": on[metric] / off[metric] if off[metric] else float("nan"),
                "p50_on_ms": on["latency_ms"]["p50"],
                "p50_off_ms": off["latency_ms"]["p50"],
                "p99_on_ms": on["latency_ms"]["p99"],
                "p99_off_ms": off["latency_ms"]["p99"],
                "mean_batch_on": on.get("mean_generation_batch"),
                "mean_batch_off": off.get("mean_generation_batch"),
                "lost": (on["requests"] - on["ok"]) + (off["requests"] - off["ok"]),
            }
        )
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Throughput against concurrency, technique on (solid) and off (dashed), per technique and server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    techniques = sorted({r["technique"] for r in rows})
    fig, axes = plt.subplots(1, len(techniques), figsize=(5.5 * len(techniques), 4), squeeze=False)
    for ax, technique in zip(axes[0], techniques):
        metric = "tokens_per_s" if technique == "speculative" else "requests_per_s"
        lines = sorted(
            {(r["server"], r.get("max_generation_batch") or 0) for r in rows if r["technique"] == technique}
        )
        for k, (server, batch) in enumerate(lines):
            for switch, style in ((True, "-"), (False, "--")):
                picked = sorted(
                    (
                        r
                        for r in rows
                        if (r["technique"], r["server"], r.get("max_generation_batch") or 0, r["on"])
                        == (technique, server, batch, switch)
                    ),
                    key=lambda r: r["concurrency"],
                )
                where = f"{server}, batch {batch}" if batch else server
                ax.plot(
                    [r["concurrency"] for r in picked],
                    [r[metric] for r in picked],
                    style,
                    marker="o",
                    color=f"C{k}",
                    label=f"{where}, {technique} {'on' if switch else 'off'}",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(technique)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    lines = [
        "technique    server          batch conc.  on / off           speed-up  p50 on / off (ms)   "
        "p99 on / off (ms)   rows/call on / off  lost"
    ]
    for s in results["summary"]:
        unit = "tok/s" if s["metric"] == "tokens_per_s" else "req/s"
        batch = s.get("max_generation_batch") or "-"
        per_call = [s.get(f"mean_batch_{k}") for k in ("on", "off")]
        per_call = " / ".join("-" if v is None or math.isnan(v) else f"{v:.1f}" for v in per_call)
        lines.append(
            f"{s['technique']:<12} {s['server']:<15} {batch!s:>5} {s['concurrency']:>5}  {s['on']:>7.1f} / "
            f"{s['off']:<7.1f}{unit} {s['speedup']:>6.2f}x  {s.get('p50_on_ms', math.nan):>8.0f} / "
            f"{s.get('p50_off_ms', math.nan):<8.0f}  {s['p99_on_ms']:>8.0f} / {s['p99_off_ms']:<8.0f}  "
            f"{per_call:>17}  {s['lost']:>4}"
        )
    return "\n".join(lines)
