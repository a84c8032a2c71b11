"""`OVModelForSequenceClassification` with early exit: a drop-in for optimum-intel's class of the same name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from optimum.intel import OVModelForSequenceClassification as _OVModelForSequenceClassification
from optimum.intel.openvino.modeling_base import core
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration import CONFIG_NAME, EarlyExitConfig, config_for_model
from .early_exit_engine import EarlyExitEngine
from .input_checks import check_encoder_inputs, check_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class EarlyExitClassifierOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` plus `exit_layers`: the 1-based number of encoder layers each sample ran,
    `(batch,)` (NumPy or torch, as the inputs were)."""

    exit_layers: np.ndarray | torch.Tensor | None = None


class OVModelForSequenceClassification(_OVModelForSequenceClassification):
    """optimum-intel's `OVModelForSequenceClassification`, plus early exit on folders exported with
    `optimum-cli export dynexec --task text-classification`.

    On a plain OpenVINO folder it behaves as optimum-intel's class (inputs are checked first). On a dynexec folder,
    `model(**tokenizer(texts, padding=True, return_tensors="np"))` returns `logits` `(batch, num_labels)` and
    `exit_layers` `(batch,)`; a sample leaves the batch after the first exit head whose score reaches the threshold.

    Example:
        >>> model = OVModelForSequenceClassification.from_pretrained("minilm-dynexec", exit_threshold=0.95)
        >>> out = model(**tokenizer(["what a lovely day"], return_tensors="np"))
        >>> out.logits, out.exit_layers
    """

    early_exit: EarlyExitEngine | None = None
    _exits_enabled: bool = False

    @classmethod
    def _from_pretrained(
        cls,
        model_id,
        config,
        *args,
        exit_threshold: float | None = None,
        exit_criterion: str | None = None,
        exits_enabled: bool = True,
        **kwargs,
    ):
        """optimum-intel's loading hook: `from_pretrained` finds the model (a folder, a hub id, or a fresh export with
        `export=True`) as optimum-intel does and calls this; it loads the model as optimum-intel does, and its exit
        segments when the folder has a `dynexec_config.json`. These keywords pass through `from_pretrained`:

        Args:
            exit_threshold (`float`, *optional*): overrides the calibrated threshold, in `[0, 1]`.
            exit_criterion (`str`, *optional*): `"confidence"` or `"entropy"`.
            exits_enabled (`bool`, defaults to `True`): `False` runs the full model (exactly optimum-intel's graph).

        Raises:
            `ValueError`: when exit settings are given for a model without exit heads, or are out of range.
        """
        model = super()._from_pretrained(model_id, config, *args, **kwargs)
        subfolder = kwargs.get("subfolder", "")
        dynexec = config_for_model(model_id, EarlyExitConfig, "an early-exit classifier", subfolder)
        if dynexec is None:
            if exit_threshold is not None or exit_criterion is not None:
                name = getattr(config, "name_or_path", "") or model_id  # an export's temporary folder says nothing
                raise ValueError(
                    f"{name} has no exit heads ({CONFIG_NAME} is missing), so it cannot exit early. Export it with "
                    "`optimum-cli export dynexec --task text-classification` first."
                )
            return model
        model.early_exit = EarlyExitEngine.from_folder(Path(model_id) / subfolder, dynexec, core)
        model.early_exit.set_policy(exit_threshold, exit_criterion)
        model._exits_enabled = exits_enabled
        if model.request is not None:  # optimum-intel compiled the full model: compile the segments alike
            model.early_exit.compile(core, model._device, model.ov_config)
        return model

    @property
    def has_early_exit(self) -> bool:
        return self.early_exit is not None

    def _require_early_exit(self) -> EarlyExitEngine:
        if self.early_exit is None:
            raise ValueError(
                "This model has no exit heads. Export it with `optimum-cli export dynexec --task text-classification`."
            )
        return self.early_exit

    @property
    def exit_threshold(self) -> float:
        """The score at which a sample exits, in `[0, 1]`; settable."""
        return self._require_early_exit().policy.threshold

    @exit_threshold.setter
    def exit_threshold(self, value: float) -> None:
        self._require_early_exit().set_policy(threshold=value)

    @property
    def exit_criterion(self) -> str:
        return self._require_early_exit().policy.criterion

    @exit_criterion.setter
    def exit_criterion(self, value: str) -> None:
        self._require_early_exit().set_policy(criterion=value)

    @property
    def exits_enabled(self) -> bool:
        """Whether samples may exit early; `False` runs optimum-intel's full graph."""
        return self._exits_enabled and self.early_exit is not None

    @exits_enabled.setter
    def exits_enabled(self, value: bool) -> None:
        if value:
            self._require_early_exit()
        self._exits_enabled = bool(value)

    @property
    def exit_config(self) -> EarlyExitConfig:
        return self._require_early_exit().config

    def check_tokenizer(self, tokenizer) -> None:
        """Raises `ValueError` when `tokenizer` does not match this model's vocabulary."""
        check_tokenizer(self.config, tokenizer)

    def compile(self):
        super().compile()
        if self.early_exit is not None:
            self.early_exit.compile(core, self._device, self.ov_config)

    def clear_requests(self):
        super().clear_requests()
        if self.early_exit is not None:
            self.early_exit.clear_requests()

    def _save_pretrained(self, save_directory):
        super()._save_pretrained(save_directory)
        if self.early_exit is not None:
            self.early_exit.save(save_directory)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        np_inputs = isinstance(input_ids, np.ndarray)
        input_ids, attention_mask, token_type_ids = check_encoder_inputs(
            self.config, input_ids, attention_mask, token_type_ids
        )
        if self.early_exit is None:
            out = super().forward(input_ids, attention_mask, token_type_ids, **kwargs)
            return out if np_inputs else SequenceClassifierOutput(logits=torch.from_numpy(np.asarray(out.logits)))
        if self.exits_enabled:
            self.compile()
            feeds = self.early_exit.first_feeds(input_ids, attention_mask, token_type_ids)
            logits, exit_layers = self.early_exit.run(feeds)
        else:
            logits = super().forward(input_ids, attention_mask, token_type_ids, **kwargs).logits
            exit_layers = np.full(input_ids.shape[0], self.config.num_hidden_layers, dtype=np.int64)
        if not np_inputs:
            logits, exit_layers = torch.from_numpy(np.asarray(logits)), torch.from_numpy(exit_layers)
        return EarlyExitClassifierOutput(logits=logits, exit_layers=exit_layers)
