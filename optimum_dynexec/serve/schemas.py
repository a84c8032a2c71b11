"""Request bodies (pydantic, unknown fields refused) of the OpenAI-compatible and TEI-shaped endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_SEQUENCES = 4


class Strict(BaseModel):
    """Refuses unknown fields, so that a misspelt option is an error instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    """What completions and chat completions share."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: str | None = Field(None, max_length=256)
    # dynexec extensions: per-request speculation switch, and a floor under the output length (as vLLM's)
    speculative: bool | None = None
    min_tokens: int = Field(0, ge=0)

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class CompletionRequest(SamplingFields):
    """`POST /v1/completions`: one prompt (a string, or a list holding one string)."""

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions`: messages rendered with the tokenizer's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class PredictRequest(Strict):
    """`POST /predict` (text-embeddings-inference's shape): one text or a list of texts.

    `early_exit` (a dynexec extension) turns exits off for this request (`false` runs the full model)."""

    inputs: str | list[str]
    raw_scores: bool = False
    truncate: bool = False
    early_exit: bool | None = None


class ImageRequest(Strict):
    """`POST /v1/images/generations` (OpenAI's shape, base64 PNGs only).

    `seed`, `num_inference_steps` and `step_policy` are dynexec extensions."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = Field(None, pattern=r"^\d{1,5}x\d{1,5}$")
    response_format: Literal["b64_json"] = "b64_json"
    user: str | None = Field(None, max_length=256)
    seed: int | None = Field(None, ge=0, lt=2**63)
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    step_policy: Literal["predictor", "adaptive", "fixed"] | None = None
