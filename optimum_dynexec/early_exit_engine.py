"""The early-exit loop over compiled encoder segments (OpenVINO only, no optimum-intel)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import openvino as ov

from .configuration import EarlyExitConfig
from .policies import ExitPolicy

logger = logging.getLogger(__name__)


def _output_index(model, name: str) -> int | None:
    for i, port in enumerate(model.outputs):
        if name in port.get_names():
            return i
    return None


def _trim_padding(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops trailing columns that no sample attends (right padding left behind by samples that exited)."""
    mask = feeds["attention_mask"]
    last = int(np.flatnonzero(mask.any(0))[-1]) + 1
    if last == mask.shape[1]:
        return feeds
    return {k: np.ascontiguousarray(v[:, :last]) for k, v in feeds.items()}


class EarlyExitEngine:
    """Owns the segment models of an early-exit folder, compiles them, and runs the exit loop.

    Args:
        models (`list[ov.Model]`): the segments in order (see `exporters.encoder_segments`).
        config (`EarlyExitConfig`): exit layers, threshold and criterion.
    """

    def __init__(self, models: list[ov.Model], config: EarlyExitConfig):
        if len(models) != len(config.exit_layers) + 1:
            raise ValueError(f"{len(config.exit_layers)} exit layers need {len(config.exit_layers) + 1} segments.")
        self.models = models
        self.config = config
        self.policy = ExitPolicy(config.threshold, config.criterion)
        # every name of every port (a port may also carry a tracer's number, which `get_any_name` can return)
        self.first_inputs = {name for port in models[0].inputs for name in port.get_names()}
        self.requests: list[ov.InferRequest] | None = None
        self._ends = [end for _, end in config.segment_layers]

    @classmethod
    def from_folder(cls, folder: str | Path, config: EarlyExitConfig, core: ov.Core) -> "EarlyExitEngine":
        """Reads the segment IR files that `config.segments` names.

        Raises:
            `FileNotFoundError`: when a segment file is missing, naming it.
        """
        folder = Path(folder)
        missing = [s for s in config.segments if not (folder / s).is_file()]
        if missing or not config.segments:
            raise FileNotFoundError(
                f"{folder} has a dynexec_config.json but its exit segments {missing or '(none listed)'} are missing; "
                "export it again with `optimum-cli export dynexec`."
            )
        return cls([core.read_model(folder / s) for s in config.segments], config)

    def compile(self, core: ov.Core, device: str, ov_config: dict | None) -> None:
        if self.requests is None:
            compiled = [core.compile_model(m, device, ov_config or {}) for m in self.models]
            self.requests = [c.create_infer_request() for c in compiled]
            self._logits_idx = [_output_index(c, "logits") for c in compiled]
            self._hidden_idx = [_output_index(c, "last_hidden_state") for c in compiled]

    def clear_requests(self) -> None:
        self.requests = None

    def save(self, folder: str | Path) -> None:
        """Writes the segments and `dynexec_config.json` into `folder`."""
        folder = Path(folder)
        for model, name in zip(self.models, self.config.segments):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, folder / name, compress_to_fp16=False)
        self.config.save(folder)

    def set_policy(self, threshold: float | None = None, criterion: str | None = None) -> None:
        policy = ExitPolicy(
            self.policy.threshold if threshold is None else threshold, criterion or self.policy.criterion
        )
        self.policy = policy
        self.config.threshold, self.config.criterion = policy.threshold, policy.criterion

    def first_feeds(self, input_ids, attention_mask, token_type_ids) -> dict[str, np.ndarray]:
        """The first segment's inputs: `token_type_ids` (zeros when not given) only when the segment takes them, as
        optimum-intel's graph of the same model does."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.first_inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Runs the exit loop: after each segment, confident samples leave the batch and the rest go on.

        Args:
            feeds (`dict[str, np.ndarray]`): the first segment's inputs (see `first_feeds`), `(batch, seq)` each.

        Returns:
            `(logits, exit_layers)`: `(batch, num_labels)` float32 and the 1-based layer each sample left after
            `(batch,)` int64.
        """
        requests = self.requests
        batch = feeds["input_ids"].shape[0]
        active = np.arange(batch)
        logits_out = exit_layers = None
        feeds = _trim_padding(feeds)
        last = len(requests) - 1
        for k, request in enumerate(requests):
            # Phase 1, infer: this segment's layers and its exit head for the samples still running.
            result = request.infer(feeds, share_inputs=True)
            logits = result[self._logits_idx[k]]
            if logits_out is None:
                logits_out = np.empty((batch, logits.shape[-1]), dtype=np.float32)
                exit_layers = np.empty(batch, dtype=np.int64)
            # Phase 2, decide: who is confident enough to leave (everyone, after the last segment).
            leave = np.ones(len(active), dtype=bool) if k == last else self.policy.should_exit(logits)
            logits_out[active[leave]] = logits[leave]
            exit_layers[active[leave]] = self._ends[k]
            if leave.all():
                break
            # Phase 3, compact: the rest continue as a smaller batch, without padding nobody needs any more.
            stay = ~leave
            active = active[stay]
            feeds = _trim_padding(
                {"hidden_states": result[self._hidden_idx[k]][stay], "attention_mask": feeds["attention_mask"][stay]}
            )
        return logits_out, exit_layers

    def run_all(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        """Runs every segment on every sample (no exits), for calibration.

        Returns:
            `(layer_logits, segment_feeds)`: logits of every head `(num_segments, batch, num_labels)` and the inputs
            each segment received.
        """
        all_logits, all_feeds = [], []
        for k, request in enumerate(self.requests):
            all_feeds.append({name: np.array(v) for name, v in feeds.items()})
            result = request.infer(feeds)
            all_logits.append(np.array(result[self._logits_idx[k]]))
            if k < len(self.requests) - 1:
                feeds = {
                    "hidden_states": np.array(result[self._hidden_idx[k]]),
                    "attention_mask": feeds["attention_mask"],
                }
        return np.stack(all_logits), all_feeds
