"""EAGLE drafts at run time: the stateful OpenVINO draft head written by `exporters.eagle.export_eagle_draft`.

The head reads the target's last hidden states, an output that the lean loop adds to the target's paged-attention
form (`paged_runner`), or to its stateful graph (`target_graph.prepare_lean_model`) when it verifies through that.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

logger = logging.getLogger(__name__)

EAGLE_CONFIG = "eagle_config.json"
TOKEN_IDS_FILE = "token_ids.npy"
DRAFT_XML = "openvino_model.xml"


@dataclass
class EagleDraftConfig:
    """What `eagle_config.json` holds beside an exported EAGLE draft head."""

    target_vocab_size: int
    hidden_size: int
    draft_vocab_size: int
    draft_type: str = "eagle"
    metrics: dict | None = None

    def save(self, folder: str | Path) -> None:
        (Path(folder) / EAGLE_CONFIG).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "EagleDraftConfig":
        return cls(**json.loads((Path(folder) / EAGLE_CONFIG).read_text()))


def is_eagle_folder(folder: str | Path) -> bool:
    return (Path(folder) / EAGLE_CONFIG).is_file()


class _VocabConfig:
    """The slice of a transformers config the target's checks read from a draft."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size


class OVEagleDraft:
    """A compiled EAGLE draft head: a stateful OpenVINO model fed tokens and target features.

    Attributes:
        request: its infer request (the KV cache lives in its states).
        input_names: the model's input names.
        token_ids (`np.ndarray`): target token id of each draft logit.
        config: `vocab_size` is the target vocabulary the draft's tokens come from.
    """

    is_eagle = True

    def __init__(
        self, model: ov.Model, eagle_config: EagleDraftConfig, token_ids: np.ndarray, device="CPU", ov_config=None
    ):
        self.model = model
        self.eagle_config = eagle_config
        self.token_ids = token_ids.astype(np.int64)
        self.config = _VocabConfig(eagle_config.target_vocab_size)
        self.device = device
        self.ov_config = dict(ov_config or {})
        self.input_names = [i.get_any_name() for i in model.inputs]
        self.request = None

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "CPU", ov_config: dict | None = None, compile=True):
        """Loads the draft head from `folder` (`openvino_model.xml`, `eagle_config.json`, `token_ids.npy`).

        Raises:
            `FileNotFoundError`: when the folder is not an exported EAGLE draft.
        """
        folder = Path(folder)
        if not is_eagle_folder(folder) or not (folder / DRAFT_XML).is_file():
            raise FileNotFoundError(f"{folder} is not an exported EAGLE draft (no {EAGLE_CONFIG} or {DRAFT_XML}).")
        draft = cls(
            ov.Core().read_model(folder / DRAFT_XML),
            EagleDraftConfig.load(folder),
            np.load(folder / TOKEN_IDS_FILE),
            device=device,
            ov_config=ov_config,
        )
        if compile:
            draft.compile()
        return draft

    def compile(self) -> None:
        if self.request is None:
            self.request = ov.Core().compile_model(self.model, self.device, self.ov_config).create_infer_request()

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ov.save_model(self.model, folder / DRAFT_XML, compress_to_fp16=False)  # keep the trained f32 weights
        np.save(folder / TOKEN_IDS_FILE, self.token_ids)
        self.eagle_config.save(folder)

    def can_generate(self) -> bool:
        return False  # it drafts for a target; it cannot decode on its own
