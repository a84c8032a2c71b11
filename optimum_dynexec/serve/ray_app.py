"""The same HTTP app as a Ray Serve deployment: each replica loads the folder and compiles its own models.

    serve run optimum_dynexec.serve:app folder=/models/minilm-dynexec num_replicas=2

or, in Python, `serve.run(build_app("/models/minilm-dynexec", num_replicas=2))`. Every replica batches the
classifier requests and the compatible generation requests it receives (the app's own micro-batcher, as on one
machine) and bounds its generation queue; Ray's router spreads requests over the replicas and refuses with 503
beyond `max_queued_requests`.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from .server import ServeSettings, build_fastapi_app


@serve.ingress()
class DynexecDeployment:
    """One replica: the folder's app built on the replica (`__serve_build_asgi_app__`), not in the driver.

    Args:
        folder (`str`): the model folder, readable at the same path on every node.
        settings (`dict`): `ServeSettings` fields.
    """

    def __init__(self, folder: str, settings: dict):
        self.folder, self.settings = folder, ServeSettings(**settings)

    def __serve_build_asgi_app__(self):
        return build_fastapi_app(self.folder, self.settings)


class RayAppArgs(BaseModel):
    """The arguments of `serve run optimum_dynexec.serve:app key=value ...` (strings converted and checked)."""

    model_config = ConfigDict(extra="forbid")

    folder: str
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(-1, ge=-1)
    api_key: str | None = None
    max_queue: int = Field(16, ge=0)
    max_batch_size: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    max_generation_batch: int = Field(ServeSettings.max_generation_batch, ge=1)
    batch_speculation: bool = ServeSettings.batch_speculation
    precision: str | None = Field(None, pattern="^(f32|bf16|f16)$")
    exit_threshold: float | None = Field(None, ge=0, le=1)
    device: str = "CPU"
    name: str = "DynexecDeployment"


def build_app(
    folder: str | Path,
    num_replicas: int = 1,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 64,
    max_queued_requests: int = -1,
    name: str = "DynexecDeployment",
    **settings,
) -> Application:
    """A Ray Serve application serving `folder` on `num_replicas` replicas.

    Args:
        folder (`str` or `Path`): the model folder (the same path on every node).
        num_replicas (`int`, defaults to 1): replicas, each with its own compiled models.
        num_cpus (`float`, defaults to 1): CPUs Ray reserves per replica.
        max_ongoing_requests (`int`, defaults to 64): requests a replica takes at once; high enough that its
            classifier batches fill (its own `max_queue` still bounds generation).
        max_queued_requests (`int`, defaults to -1): requests Ray's router holds before 503; -1 is unbounded.
        name (`str`): the deployment's name.
        **settings: `ServeSettings` fields (`api_key`, `max_queue`, `ov_config`, ...).

    Returns:
        `ray.serve.Application`: pass it to `serve.run`.

    Raises:
        `ValueError`: for a missing folder or bad settings (checked here, before any replica starts).
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give an exported model folder.")
    ServeSettings(**settings)  # fail in the driver, not in every replica
    deployment = serve.deployment(DynexecDeployment, name=name).options(
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests,
        ray_actor_options={"num_cpus": num_cpus},
    )
    return deployment.bind(str(folder), settings)


def app(args: dict) -> Application:
    """The application builder of `serve run optimum_dynexec.serve:app folder=... [num_replicas=2] [precision=f32]`.

    Raises:
        `pydantic.ValidationError`: for unknown or malformed arguments.
    """
    parsed = RayAppArgs.model_validate(args).model_dump()
    precision = parsed.pop("precision")
    if precision is not None:
        parsed["ov_config"] = {"INFERENCE_PRECISION_HINT": precision}
    return build_app(**parsed)
