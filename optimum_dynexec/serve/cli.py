"""The command line of the embedded server: `python -m optimum_dynexec.serve FOLDER` / `optimum-dynexec-serve`."""

from __future__ import annotations

import argparse
import json
import logging
import os

import uvicorn

from .server import ServeSettings, build_fastapi_app

PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
API_KEY_ENV = "OPTIMUM_DYNEXEC_API_KEY"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optimum-dynexec-serve",
        description="Serve an exported dynexec (or plain optimum-intel) OpenVINO folder over HTTP: OpenAI-compatible "
        "completions for causal LMs, /predict for classifiers, /v1/images/generations for Stable Diffusion.",
    )
    p.add_argument("folder", help="the model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require `Authorization: Bearer KEY` (default: ${API_KEY_ENV}, else no key)",
    )
    defaults = ServeSettings()
    p.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests that may wait for the model before 429 (default %(default)s)",
    )
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help="classifier inputs per batched call and per request (default %(default)s)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="how long a classifier or generation batch waits for more requests (default %(default)s)",
    )
    p.add_argument(
        "--max-generation-batch",
        type=int,
        default=defaults.max_generation_batch,
        help="concurrent generation requests merged into one batched call (streams join speculative calls); 1 runs "
        "each alone (default %(default)s)",
    )
    p.add_argument(
        "--batch-speculation",
        action=argparse.BooleanOptionalAction,
        default=defaults.batch_speculation,
        help="calls shared by several generation requests speculate, their rows sharing the verification calls "
        "(default: on; --no-batch-speculation decodes shared calls plainly, a request alone still speculates)",
    )
    p.add_argument("--max-images", type=int, default=defaults.max_images)
    p.add_argument("--default-max-tokens", type=int, default=defaults.default_max_tokens)
    p.add_argument("--model-name", help="the model name in responses (default: the folder's name)")
    p.add_argument("--device", default="CPU")
    p.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        help="OpenVINO inference precision (the CPU defaults to bf16 where it can)",
    )
    p.add_argument(
        "--ov-config", type=json.loads, default=None, help='OpenVINO properties as JSON, e.g. \'{"NUM_STREAMS": "2"}\''
    )
    p.add_argument("--exit-threshold", type=float, help="an early-exit classifier's threshold (default: calibrated)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The `ServeSettings` of parsed arguments (`--precision` folded into the OpenVINO config)."""
    ov_config = dict(args.ov_config or {})
    if args.precision:
        ov_config["INFERENCE_PRECISION_HINT"] = PRECISIONS[args.precision]
    return ServeSettings(
        api_key=args.api_key or None,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_images=args.max_images,
        default_max_tokens=args.default_max_tokens,
        max_generation_batch=args.max_generation_batch,
        batch_speculation=args.batch_speculation,
        model_name=args.model_name,
        device=args.device,
        ov_config=ov_config or None,
        exit_threshold=args.exit_threshold,
    )


def main(argv: list[str] | None = None) -> None:
    """Parses the command line, loads the folder and serves it with uvicorn until interrupted."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_fastapi_app(args.folder, settings_from_args(args))
    except ValueError as error:
        parser().error(str(error))
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        logging.getLogger(__name__).warning(
            "Serving on %s without an API key: anyone who reaches it can use it.", args.host
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
