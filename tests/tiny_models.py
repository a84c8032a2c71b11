"""Tiny random encoders with a real tokenizer, for tests of mechanics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import BertTokenizerFast

WORDS = (
    "good great fine bad awful terrible movie film plot actor day night love hate very not really the a it "
    "was is and but so quite"
).split()


def make_tokenizer() -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=64)


def make_tiny_bert(
    folder: Path, num_layers: int = 4, num_labels: int = 2, seed: int = 0, model_type: str = "bert"
) -> Path:
    """Saves a random sequence classifier (`model_type` "bert", "roberta", "xlm-roberta", "camembert", "electra",
    "distilbert", "albert", "deberta-v2" or "mpnet") with a BERT tokenizer into `folder`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    # the parts that make a family what it is, switched on (narrow embeddings, relative positions, a conv layer)
    family_settings = {
        "albert": dict(embedding_size=16, num_hidden_groups=2),
        "deberta-v2": dict(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            position_biased_input=False,
            conv_kernel_size=3,
        ),
    }
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
        **family_settings.get(model_type, {}),
    )
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_texts(n: int, seed: int = 0, max_words: int = 12) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, max_words, (1,), generator=g))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g)))
    return out


def make_tiny_llama(
    folder: Path, vocab_size: int = 96, num_layers: int = 2, seed: int = 0, max_position_embeddings: int = 256
) -> Path:
    """Exports a random Llama causal LM with optimum-intel (stateful) into `folder` and returns it."""
    from optimum.intel import OVModelForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    hf = folder / "hf"
    make_word_tokenizer(vocab_size).save_pretrained(hf)
    model = LlamaForCausalLM(config).eval()
    # sharpen the output so greedy text is not a tie-break lottery and sampling has structure
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(hf)
    OVModelForCausalLM.from_pretrained(hf, export=True, compile=False).save_pretrained(folder / "ov")
    return folder / "ov"


def make_word_tokenizer(vocab_size: int, shuffle_seed: int | None = None):
    """A word-level tokenizer over `w3 ... w{vocab_size-1}` plus <pad>, <s>, </s> (ids 0, 1, 2).

    With `shuffle_seed`, the words get other ids: the same size, a different tokenizer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(3, vocab_size)]
    if shuffle_seed is not None:
        order = torch.randperm(len(words), generator=torch.Generator().manual_seed(shuffle_seed)).tolist()
        words = [words[i] for i in order]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def make_char_tokenizer(vocab_size: int = 96):
    """A character-level tokenizer (ids 3.. are letters, digits, space and punctuation; <pad>, <s>, </s> are 0-2)
    whose tokens concatenate back into text, as stop strings need."""
    import string

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = (string.ascii_letters + string.digits + " .,;:!?'-()")[: vocab_size - 3]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.BPE(vocab, merges=[], unk_token="<pad>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def make_clip_char_tokenizer(model_max_length: int = 16):
    """A `CLIPTokenizer` over single characters (no merges): tiny but real."""
    import string

    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + "-'"
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=model_max_length)


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Saves a random Stable-Diffusion-shaped pipeline (the package's architecture at its tiny settings: 32x32 images,
    8x8 latents, DDIM) with a character-level CLIP tokenizer into `folder`."""
    from diffusers import StableDiffusionPipeline

    from optimum_dynexec.reference.text_to_image import TextToImageConfig, _components

    torch.manual_seed(seed)
    tokenizer = make_clip_char_tokenizer()
    vae, text_encoder, unet, scheduler = _components(TextToImageConfig.tiny(), len(tokenizer), tokenizer)
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_step_predictor(base: Path, folder: Path, step_grid: list[int]) -> Path:
    """Trains a step predictor from the tiny classifier `base` on a fake rule: prompts that mention `good` need
    `step_grid[0]` steps, others `step_grid[-1]`."""
    from optimum_dynexec.training.classifier import FineTuneConfig
    from optimum_dynexec.training.step_predictor import StepRecords, train_step_predictor

    texts = [" ".join(w for w in t.split() if w != "good") or "day" for t in random_texts(120, seed=3, max_words=5)]
    prompts = [f"good {t}" if i % 2 else t for i, t in enumerate(texts)]
    steps = [step_grid[0] if "good" in p.split() else step_grid[-1] for p in prompts]
    scores = [[1.0] * len(step_grid)] * len(prompts)
    records = StepRecords(prompts, list(range(len(prompts))), step_grid, scores, None, steps, 0.9)
    config = FineTuneConfig(epochs=8, learning_rate=3e-3, batch_size=16, max_length=16)
    return train_step_predictor(records, base, folder, config)


def plain_greedy(model, ids: np.ndarray, n: int) -> np.ndarray:
    """`n` greedy tokens of `model.generate` (no EOS stop) after the prompt `ids` `(1, length)`."""
    t = torch.from_numpy(ids)
    return model.generate(
        input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n, do_sample=False, eos_token_id=None
    ).numpy()


def random_prompts(seed: int, count: int = 4, vocab_size: int = 96) -> list[np.ndarray]:
    """`count` random prompts `(1, 2..14)` of token ids in `[3, vocab_size)`."""
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab_size, size=(1, int(rng.integers(2, 15)))) for _ in range(count)]


def random_head(hf: Path, seed: int = 0, vocab_step: int = 1):
    """An EAGLE head (`EagleDraftModel`) for the tiny target whose fusion and layer are random (so it drafts some
    wrong tokens)."""
    from transformers import LlamaForCausalLM

    from optimum_dynexec.training.eagle_model import EagleDraftModel

    torch.manual_seed(seed)
    target = LlamaForCausalLM.from_pretrained(hf).eval()
    head = EagleDraftModel.from_target(target, torch.arange(0, target.config.vocab_size, vocab_step))
    with torch.no_grad():
        for module in (head.fc, head.layer.self_attn.o_proj, head.layer.mlp.down_proj):
            module.weight.normal_(std=0.2)
    return head.eval()


# small settings of decoder families optimum-intel exports (phi3, gpt_bigcode and the SSM families get a class of
# their own); which of them the installed transformers lets optimum-intel export is its export configs' business
_LLAMA_LIKE = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILY_CONFIGS = {
    **{
        t: {**_LLAMA_LIKE, **_TOKENS}
        for t in ("llama", "mistral", "qwen2", "qwen3", "granite", "olmo2", "stablelm", "phi3")
    },
    "starcoder2": {**_LLAMA_LIKE, **_TOKENS},
    **{t: {**_LLAMA_LIKE, **_TOKENS} for t in ("cohere", "cohere2")},  # logits times a scale after the LM head
    "phi": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **_TOKENS),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2),
    "gpt_bigcode": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, bos_token_id=1, eos_token_id=2),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **_TOKENS),
    "opt": dict(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32, **_TOKENS
    ),
    "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **_TOKENS),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4, **_TOKENS),
    **{t: {**_LLAMA_LIKE, **_TOKENS, "head_dim": 8} for t in ("gemma", "gemma2", "gemma3_text")},
    # recurrent (SSM) state, alone or beside attention layers: no rollback
    **{t: dict(hidden_size=32, num_hidden_layers=2, state_size=8, **_TOKENS) for t in ("mamba", "falcon_mamba")},
    "granitemoehybrid": dict(
        **_LLAMA_LIKE,
        **_TOKENS,
        layer_types=["mamba", "attention"],
        num_local_experts=0,
        shared_intermediate_size=64,
        mamba_n_heads=4,
        mamba_d_state=8,
        mamba_chunk_size=16,
    ),
}


def make_tiny_decoder(
    folder: Path, model_type: str, vocab_size: int = 96, seed: int = 0, stateful: bool = True
) -> Path:
    """Exports a random causal LM of `model_type` (settings from `FAMILY_CONFIGS`) with optimum-intel (stateful)
    into `folder / "ov"` and returns that folder."""
    from optimum.intel import OVModelForCausalLM

    hf = save_tiny_decoder(folder / "hf", model_type, vocab_size, seed)
    OVModelForCausalLM.from_pretrained(hf, export=True, compile=False, stateful=stateful).save_pretrained(
        folder / "ov"
    )
    return folder / "ov"


def save_tiny_decoder(folder: Path, model_type: str, vocab_size: int = 96, seed: int = 0) -> Path:
    """Saves a random transformers causal LM of `model_type` (settings from `FAMILY_CONFIGS`, sharpened output) with
    a word tokenizer into `folder` and returns it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **FAMILY_CONFIGS[model_type])
    config.max_position_embeddings = getattr(config, "max_position_embeddings", 256)
    make_word_tokenizer(vocab_size).save_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.save_pretrained(folder)
    return folder


def record_batch_feeds(monkeypatch) -> list[set[int]]:
    """The rows each call of the speculative batch loop feeds (`PagedBatchRunner.infer`), appended as they run."""
    from optimum_dynexec import paged_batch

    fed: list[set[int]] = []
    infer = paged_batch.PagedBatchRunner.infer
    monkeypatch.setattr(
        paged_batch.PagedBatchRunner,
        "infer",
        lambda self, feeds, *at: fed.append(set(feeds)) or infer(self, feeds, *at),
    )
    return fed
