"""`OVModelForCausalLM` that speculates: a draft model, an EAGLE head or prompt lookup in any `generate()` call.

A drop-in for optimum-intel's class of the same name. `generate(assistant_model=...)` and
`generate(prompt_lookup_num_tokens=k)` run the lean speculative loop (`speculative_loop`) inside transformers'
`generate()`: transformers prepares the generation config, logits processors and stopping criteria as for plain
decoding, and the loop honours them all, greedy or sampled (`do_sample`, temperature, top_k, top_p, min_p,
repetition_penalty, ...), with a streamer, stop strings, several EOS ids, `min_new_tokens` and `max_time`; its
arguments `num_assistant_tokens`, `num_assistant_tokens_schedule` and `assistant_confidence_threshold` set the
drafter. A batch (left-padded, as users pass it) speculates for every row in shared verification calls of the
target's paged form. A setting the loop cannot serve (beam search, several return sequences, extra outputs, right
padding) is named in a warning and the call decodes plainly. `use_lean_loop = False` runs transformers' own assisted
loop instead, with rejected draft tokens trimmed from the OpenVINO states after each verification.
"""

from __future__ import annotations

import copy
import functools
import logging
import weakref
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import transformers
from optimum.intel import OVModelForCausalLM as _OVModelForCausalLM
from optimum.intel.openvino.modeling_decoder import SSM_MODELS, OVModelWithMambaForCausalLM
from transformers import StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from .configuration import SpeculativeConfig, config_for_model
from .drafters import make_drafter
from .eagle import OVEagleDraft
from .kv_cache import StatefulKVCache
from .paged_runner import paged_form
from .policies.lookahead import LookaheadSchedule, batch_schedule
from .sampling import TokenSampler
from .speculative_batch import speculative_decode_batch
from .speculative_loop import speculative_decode
from .streamers import RowStreamers
from .target_graph import LOGITS_TO_KEEP, has_logits_slice

logger = logging.getLogger(__name__)
_OPTIMUM_INTEL_VERSION = version("optimum-intel")


def _lookahead_arguments(kwargs: dict, generation_config) -> dict[str, int]:
    names = ("num_assistant_tokens", "prompt_lookup_num_tokens")
    values = {
        n: kwargs.get(n, getattr(generation_config, n, None) if generation_config is not None else None) for n in names
    }
    return {n: v for n, v in values.items() if v is not None}


# arguments that choose the drafter; the lean loop takes them out of the call it hands to transformers
_SPECULATIVE_KWARGS = {
    "prompt_lookup_num_tokens",
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "assistant_confidence_threshold",
}
# arguments that only mean something with an assistant model
_ASSISTANT_KWARGS = {"num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"}
# generate() arguments beside the generation config's fields that the lean loop serves
_LEAN_ARGUMENTS = {
    "input_ids",
    "attention_mask",
    "streamer",
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "tokenizer",
    "use_cache",
}
# generation-config fields the lean loop cannot serve, with the values it can
_LEAN_BLOCKERS = {
    "num_beams": (1, None),
    "num_return_sequences": (1, None),
    "return_dict_in_generate": (False, None),
    "output_scores": (False, None),
    "output_logits": (False, None),
    "output_attentions": (False, None),
    "output_hidden_states": (False, None),
    "guidance_scale": (None, 1.0),
    "penalty_alpha": (None,),
    "dola_layers": (None,),
    "assistant_early_exit": (None,),
}


def _needs_hidden(assistant_model) -> bool:
    return getattr(assistant_model, "is_eagle", False)


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


class OVModelForCausalLM(_OVModelForCausalLM):
    """optimum-intel's `OVModelForCausalLM` with KV-cache rollback, so that speculative decoding works.

    Example:
        >>> target = OVModelForCausalLM.from_pretrained("smollm2-ov")
        >>> draft = OVModelForCausalLM.from_pretrained("smollm2-draft-ov")
        >>> target.generate(**inputs, assistant_model=draft, max_new_tokens=64)  # the target's own greedy text
        >>> target.generate(**inputs, prompt_lookup_num_tokens=5, max_new_tokens=64)  # copies from the prompt
    """

    draft: "OVModelForCausalLM | None" = None
    speculative_config: SpeculativeConfig | None = None
    speculation_enabled: bool = False
    num_forward_calls: int = 0  # target calls so far: tokens generated / calls = tokens accepted per call
    use_lean_loop: bool = True  # greedy speculation through `speculative_greedy`; False: transformers' loop
    draft_back_off: bool = True  # the lean loop's heuristic schedule may stop drafting when the draft keeps failing
    # in a sampling call a draft model or EAGLE head proposes its argmax (a point mass, cheaper; the output's
    # distribution is the same); True: it draws from its processed distribution (`drafters._draft_one`)
    sample_drafts: bool = False
    # the lean loop verifies through the model's paged-attention form (`paged_runner`); False: its stateful request
    paged_verification: bool = True
    # calls without a proposal go through a second compilation of the paged form (a few tens of MB); False: padded
    paged_single_steps: bool = True
    # a call resumes after the prompt prefix the previous call left in the paged cache (`speculative_decode`)
    reuse_prompt_cache: bool = True
    # an exported folder's drafter also speculates on batches (a drafter passed to generate() always does); None:
    # with prompt lookup or an EAGLE head (batch of 4 on SmolLM2-135M, 2 cores: 1.33-1.59x plain batch decoding),
    # not with a draft model, whose rows each make a call per drafted token
    speculate_batches: bool | None = None
    # what the last generate() call's lean loop did (`SpeculativeStats`); None after a call that took another path
    last_speculative_stats = None
    _draft_schedules = None  # draft -> (settings, LookaheadSchedule) kept across calls for the "heuristic" schedule

    @classmethod
    def _from_pretrained(cls, model_id, config, *args, **kwargs):
        """optimum-intel's loading hook: loads the model as optimum-intel does, with the class it picks for the
        family (e.g. `OVPhi3ForCausalLM`) given this class's rollback and speculation; on a folder exported with
        `--draft-model` (or prompt lookup) it also loads the draft, with the same device and OpenVINO config (or
        `draft_ov_config=`: the target verifies every drafted token, so the draft's precision never changes the
        output), and speculates in every `generate()` call."""
        draft_ov_config = kwargs.pop("draft_ov_config", None)
        model = super()._from_pretrained(model_id, config, *args, **kwargs)
        if not isinstance(model, OVModelForCausalLM):
            model.__class__ = _with_rollback(type(model))  # same state, this class's methods first
        folder = Path(model_id) / kwargs.get("subfolder", "")
        dynexec = config_for_model(model_id, SpeculativeConfig, "a speculative causal LM", kwargs.get("subfolder", ""))
        if dynexec is None:
            return model
        model.speculative_config = dynexec
        model.speculation_enabled = True
        if dynexec.draft is not None:
            draft_kwargs = {k: v for k, v in kwargs.items() if k in ("device", "ov_config", "compile")}
            if draft_ov_config is not None:
                draft_kwargs["ov_config"] = draft_ov_config
            draft_class = OVEagleDraft if dynexec.draft_type == "eagle" else OVModelForCausalLM
            model.draft = draft_class.from_pretrained(folder / dynexec.draft, **draft_kwargs)
        return model

    @classmethod
    def _export(cls, model_id, config, *args, **kwargs):
        """optimum-intel's export hook; an export that optimum-intel refuses under the installed transformers (its
        export config for the family caps the version) names the family and the versions.

        Raises:
            `ValueError`: when optimum-intel's export config for the family does not allow this transformers version.
        """
        try:
            return super()._export(model_id, config, *args, **kwargs)
        except ValueError as error:
            if "version of Transformers does not allow" not in str(error):
                raise
            raise ValueError(
                f"optimum-intel {_OPTIMUM_INTEL_VERSION} cannot export the {config.model_type} family under "
                f"transformers {transformers.__version__}: {error}. Export it with optimum-cli in an environment "
                "whose transformers is in that range, then load the exported folder here."
            ) from error

    def _save_pretrained(self, save_directory):
        super()._save_pretrained(save_directory)
        if self.speculative_config is not None:
            if self.draft is not None:
                self.draft.save_pretrained(Path(save_directory) / self.speculative_config.draft)
            self.speculative_config.save(save_directory)

    def prepare_inputs(self, input_ids, *args, **kwargs) -> dict:
        """optimum-intel's inputs, plus `logits_to_keep` = every position once the lean loop has added that input
        (so this path returns the same logits as optimum-intel's class)."""
        inputs = super().prepare_inputs(input_ids, *args, **kwargs)
        if has_logits_slice(self):
            inputs[LOGITS_TO_KEEP] = np.asarray([input_ids.shape[1]], dtype=np.int64)
        return inputs

    def forward(
        self, input_ids, attention_mask=None, past_key_values=None, position_ids=None, token_type_ids=None, **kwargs
    ):
        self.num_forward_calls += 1
        out = super().forward(input_ids, attention_mask, past_key_values, position_ids, token_type_ids, **kwargs)
        if self.stateful:
            out.past_key_values = StatefulKVCache(self)
        return out

    def generate(self, inputs=None, generation_config=None, *args, assistant_model=None, **kwargs):
        """transformers' `generate`, with checks that give clear errors for speculative decoding.

        Raises:
            `ValueError`: for a lookahead of zero or less, a draft whose vocabulary differs from the target's, a
                stateless export or a recurrent-state (SSM) model when speculating, or a requested length beyond the
                model's context.
            `TypeError`: when `assistant_model` is not a causal LM.
        """
        self.last_speculative_stats = None  # set again only by the lean loop: never a previous call's figures
        kwargs, assistant_model = self._apply_default_speculation(inputs, kwargs, assistant_model)
        lookahead = _lookahead_arguments(kwargs, generation_config)
        speculative = assistant_model is not None or lookahead.get("prompt_lookup_num_tokens") is not None
        for name, value in lookahead.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number of tokens, got {value!r}.")
        input_ids = kwargs.get("input_ids", inputs)
        if input_ids is not None:
            self._check_input_ids(input_ids, kwargs.get("attention_mask"))
            self._check_length(input_ids.shape[-1], kwargs, generation_config)
        if speculative:
            if not self.stateful:
                raise ValueError("Speculative decoding needs a stateful export (the default of optimum-intel).")
            for role, model in (("the draft", assistant_model), ("the model", self)):
                model_type = getattr(getattr(model, "config", None), "model_type", None)
                if model_type in SSM_MODELS:
                    raise ValueError(
                        f"Speculative decoding rolls back a KV cache; {role}, a {model_type}, keeps a recurrent (SSM) "
                        "state that cannot be rolled back: decode without a drafter, or draft with a KV-cache model."
                    )
        if assistant_model is not None:
            assistant_model = self._as_rollback_model(assistant_model)
        if speculative and self.use_lean_loop:
            blocker, config = self._lean_blocker(input_ids, args, kwargs, generation_config, assistant_model)
            if blocker is None:
                return self._lean_generate(inputs, generation_config, config, kwargs, assistant_model)
            _warn_once(f"The speculative loop does not serve {blocker}: such calls decode plainly, without a drafter.")
            return super().generate(
                inputs, generation_config, *args, **{k: v for k, v in kwargs.items() if k not in _SPECULATIVE_KWARGS}
            )
        if assistant_model is not None and kwargs.get("prompt_lookup_num_tokens") is not None:
            logger.warning(
                "transformers' assisted loop (use_lean_loop=False) drafts with one drafter: this call drafts with "
                "the draft model alone."
            )
            kwargs = {k: v for k, v in kwargs.items() if k != "prompt_lookup_num_tokens"}
        if getattr(assistant_model, "is_eagle", False):
            logger.warning(
                "The EAGLE draft speculates in the lean loop only (use_lean_loop=True): this call decodes plainly."
            )
            assistant_model = None
            kwargs = {k: v for k, v in kwargs.items() if k not in _ASSISTANT_KWARGS}
            speculative = False
        out = super().generate(inputs, generation_config, *args, assistant_model=assistant_model, **kwargs)
        if speculative and input_ids is not None:
            out = self._clip_to_max_new_tokens(out, input_ids.shape[-1], kwargs, generation_config)
        return out

    @staticmethod
    def _clip_to_max_new_tokens(out, prompt_length: int, kwargs: dict, generation_config):
        """transformers' prompt-lookup loop can accept one verified token past `max_new_tokens`: drop it."""
        new = kwargs.get("max_new_tokens", getattr(generation_config, "max_new_tokens", None))
        if new is None:
            return out
        limit = prompt_length + new
        if isinstance(out, torch.Tensor):
            return out[:, :limit]
        if getattr(out, "sequences", None) is not None and out.sequences.shape[-1] > limit:
            out.sequences = out.sequences[:, :limit]
        return out

    def _lean_blocker(self, input_ids, args, kwargs: dict, generation_config, assistant_model):
        """What in this call keeps it off the lean loop (a phrase naming the setting, or `None`), and the call's
        generation config merged with its arguments (`None` when a blocker is found before it is needed)."""
        if args:
            return "positional arguments after generation_config", None
        config_fields = set(vars(generation_config or self.generation_config))
        unknown = sorted(set(kwargs) - _LEAN_ARGUMENTS - _SPECULATIVE_KWARGS - config_fields)
        if unknown:
            return f"the argument {unknown[0]!r}", None
        if input_ids is None:
            return "inputs other than input_ids", None
        mask = None if kwargs.get("attention_mask") is None else torch.as_tensor(kwargs["attention_mask"])
        if mask is not None and not bool(mask[:, -1].all()):
            return "right padding (pad on the left, as decoder-only models need)", None
        if input_ids.shape[0] > 1 or (mask is not None and not bool(mask.all())):
            streamer = kwargs.get("streamer")
            if streamer is not None and not isinstance(streamer, RowStreamers):
                return "a streamer on a batch (stream each row with `RowStreamers`)", None
            if not self.paged_verification:
                return "a batch or a padded sequence with paged_verification=False", None
            form = paged_form(self, _needs_hidden(assistant_model))
            if form.error is not None:
                return f"a batch or a padded sequence on this model ({form.error})", None
        config, _ = self._prepare_generation_config(
            copy.deepcopy(generation_config),
            **{k: v for k, v in kwargs.items() if k not in _LEAN_ARGUMENTS},
        )
        for name, allowed in _LEAN_BLOCKERS.items():
            value = getattr(config, name, None)
            if value not in allowed:
                return f"{name}={value!r}", config
        return None, config

    def _lean_generate(self, inputs, generation_config, config, kwargs: dict, assistant_model):
        """Runs `speculative_loop.speculative_decode` inside transformers' `generate()` (as its `custom_generate`),
        so that transformers prepares the generation config, the logits processors and the stopping criteria exactly
        as for plain decoding; the loop samples or takes the argmax with them, streams accepted tokens and stops
        where plain decoding stops. `config` is the call's merged generation config (from `_lean_blocker`)."""
        lookup = kwargs.get("prompt_lookup_num_tokens", config.prompt_lookup_num_tokens)
        if assistant_model is not None:
            schedule = self._draft_schedule(
                assistant_model, int(config.num_assistant_tokens), config.num_assistant_tokens_schedule
            )
            confidence = float(config.assistant_confidence_threshold or 0.0)
        else:
            schedule, confidence = LookaheadSchedule(int(lookup), "constant"), 0.0

        def drafter_of(own_request: bool):  # a batch gives every row a drafter (and schedule) of its own
            if not own_request:
                return make_drafter(assistant_model, lookup, schedule, confidence, sample=self.sample_drafts)
            # each row's drafters adapt their length (up to the asked one); only a draft model, whose every drafted
            # token is a call of its own, stops proposing where it keeps failing (`batch_schedule`)
            lookup_own = None if lookup is None else batch_schedule(LookaheadSchedule(int(lookup)))
            if assistant_model is None:
                return make_drafter(None, lookup, lookup_own)
            own = batch_schedule(schedule, back_off=self.draft_back_off and not _needs_hidden(assistant_model))
            return make_drafter(assistant_model, lookup, own, confidence, True, lookup_own, sample=self.sample_drafts)

        # the call as transformers sees it: no drafter settings (transformers' assisted mode refuses a stateful model)
        # and no stop strings (it hands a callable custom_generate no tokenizer: the criterion is built here)
        kwargs = {k: v for k, v in kwargs.items() if k not in _SPECULATIVE_KWARGS and k != "stop_strings"}
        stopping = list(kwargs.pop("stopping_criteria", None) or [])
        tokenizer = kwargs.pop("tokenizer", None)
        if config.stop_strings is not None:
            if tokenizer is None:
                raise ValueError("Generating with stop strings needs the model's tokenizer: pass tokenizer=...")
            stopping.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=config.stop_strings))
        call_config = generation_config
        base = generation_config if generation_config is not None else self.generation_config
        if base.prompt_lookup_num_tokens is not None or base.stop_strings is not None:
            call_config = copy.deepcopy(base)
            call_config.prompt_lookup_num_tokens = call_config.stop_strings = None
        streamer = kwargs.get("streamer")

        def decode(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
            sampler = TokenSampler(logits_processor, bool(generation_config.do_sample))
            mask = model_kwargs.get("attention_mask")
            if input_ids.shape[0] > 1 or (mask is not None and not bool(mask.all())):
                return model._batch_decode(
                    input_ids, mask, generation_config, sampler, stopping_criteria, drafter_of, streamer
                )
            drafter = drafter_of(False)
            sequence, stats = speculative_decode(
                model,
                input_ids.numpy(),
                drafter,
                int(generation_config.max_length),
                sampler=sampler,
                stopping_criteria=stopping_criteria,
                streamer=streamer,
                paged=model.paged_verification,
                single_steps=model.paged_single_steps,
                reuse_prefix=model.reuse_prompt_cache,
            )
            model.last_speculative_stats = stats
            model.num_forward_calls += stats.target_calls + 1
            return torch.from_numpy(sequence)

        return super().generate(
            inputs,
            call_config,
            stopping_criteria=StoppingCriteriaList(stopping),
            custom_generate=decode,
            **kwargs,
        )

    def _batch_decode(self, input_ids, mask, generation_config, sampler, stopping_criteria, drafter_of, streamer):
        """Speculates for every row of a (left-padded) batch in shared verification calls
        (`speculative_batch.speculative_decode_batch`); returns what plain batch decoding returns: the padded prompts,
        then each row's new tokens, padded after a row that finished early."""
        ids = input_ids.numpy()
        keep = np.ones_like(ids, dtype=bool) if mask is None else mask.numpy().astype(bool)
        pad_id = generation_config._pad_token_tensor
        pad_id = int(pad_id) if pad_id is not None else 0
        prompts = [row[k].tolist() for row, k in zip(ids, keep)]
        pads = [row[~k].tolist() for row, k in zip(ids, keep)]
        new, stats = speculative_decode_batch(
            self,
            prompts,
            pads,
            [drafter_of(True) for _ in prompts],
            int(generation_config.max_length) - ids.shape[1],
            sampler=sampler,
            stopping_criteria=stopping_criteria,
            streamer=streamer,
        )
        self.last_speculative_stats = stats
        self.num_forward_calls += stats.target_calls + 1
        width = max(map(len, new))
        tail = np.full((len(new), width), pad_id, dtype=np.int64)
        for i, tokens in enumerate(new):
            tail[i, : len(tokens)] = tokens
        return torch.from_numpy(np.concatenate([ids, tail], axis=1))

    def _draft_schedule(self, draft, num_tokens: int, kind: str) -> LookaheadSchedule:
        """The lookahead schedule of a call with `draft`. As in transformers, `"heuristic"` carries what it learnt
        (draft length, back-off and probe interval) over to the next call with the same draft and settings, so a
        useless draft stays backed off; `"heuristic_transient"` and `"constant"` start afresh every call."""
        key = (num_tokens, kind, self.draft_back_off)
        if self._draft_schedules is None:
            self._draft_schedules = weakref.WeakKeyDictionary()
        if kind == "heuristic":
            kept = self._draft_schedules.get(draft)
            if kept is not None and kept[0] == key:
                return kept[1]
        schedule = LookaheadSchedule(num_tokens, kind, back_off=self.draft_back_off)
        if kind == "heuristic":
            self._draft_schedules[draft] = (key, schedule)
        return schedule

    @property
    def speculates_on_batches(self) -> bool:
        """Whether the exported drafter speculates on a batch (`speculate_batches`, or by default: unless it is a
        separate draft model)."""
        if self.speculate_batches is not None:
            return bool(self.speculate_batches)
        return self.draft is None or _needs_hidden(self.draft)

    def _apply_default_speculation(self, inputs, kwargs: dict, assistant_model):
        """Adds the exported draft (or prompt lookup) and the config's lookahead unless the call chose its own."""
        if not self.speculation_enabled or assistant_model is not None or "prompt_lookup_num_tokens" in kwargs:
            return kwargs, assistant_model
        input_ids = kwargs.get("input_ids", inputs)
        if input_ids is not None and input_ids.shape[0] > 1 and not self.speculates_on_batches:
            _warn_once(
                "A batch decodes plainly: model.speculate_batches is off, or the exported drafter is a draft model, "
                "which drafts row by row with a call per token. Set model.speculate_batches = True, or pass a "
                "drafter to generate(), to speculate anyway."
            )
            return kwargs, assistant_model
        kwargs = {**self.speculative_config.generate_kwargs(), **kwargs}
        return kwargs, self.draft

    def _check_input_ids(self, input_ids, attention_mask=None) -> None:
        """Raises `ValueError` for what OpenVINO would fail on deep inside, or silently decode: an empty prompt, ids
        outside the vocabulary, a mask of another shape."""
        ids = torch.as_tensor(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(ids.shape)}.")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(
                f"The prompt is empty (input_ids of shape {tuple(ids.shape)}): give at least one token, e.g. the "
                "tokenizer's BOS token."
            )
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer token ids, got {ids.dtype}.")
        vocab = getattr(self.config, "vocab_size", None)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or (vocab is not None and high >= vocab):
            bad = low if low < 0 else high
            raise ValueError(
                f"Token id {bad} is outside the model's vocabulary of {vocab} tokens (ids 0 to {vocab - 1}): was the "
                "prompt made by another model's tokenizer?"
            )
        mask_shape = None if attention_mask is None else tuple(torch.as_tensor(attention_mask).shape)
        if mask_shape is not None and mask_shape != tuple(ids.shape):
            raise ValueError(f"attention_mask has shape {mask_shape}; input_ids has {tuple(ids.shape)}.")

    def _check_length(self, prompt_length: int, kwargs: dict, generation_config) -> None:
        limit = getattr(self.config, "max_position_embeddings", None)
        new = kwargs.get("max_new_tokens", getattr(generation_config, "max_new_tokens", None))
        if limit is not None and new is not None and prompt_length + new > limit:
            raise ValueError(
                f"The prompt ({prompt_length} tokens) plus max_new_tokens ({new}) exceeds the model's context of "
                f"{limit} tokens; lower max_new_tokens to at most {max(0, limit - prompt_length)}."
            )

    def _as_rollback_model(self, assistant):
        """Checks the draft and gives an optimum-intel OpenVINO draft the same rollback as this class."""
        if getattr(assistant, "is_eagle", False):
            if assistant.config.vocab_size != self.config.vocab_size:
                raise ValueError(
                    f"The EAGLE draft was trained for a vocabulary of {assistant.config.vocab_size} tokens; the "
                    f"target has {self.config.vocab_size}: it belongs to another model."
                )
            return assistant
        if not getattr(assistant, "can_generate", lambda: False)():
            raise TypeError(f"assistant_model must be a causal LM that can generate, got {type(assistant).__name__}.")
        target_vocab, draft_vocab = self.config.vocab_size, assistant.config.vocab_size
        if target_vocab != draft_vocab:
            raise ValueError(
                f"The draft's vocabulary ({draft_vocab} tokens) differs from the target's ({target_vocab}): a draft "
                "must share the target's tokenizer."
            )
        if isinstance(assistant, _OVModelForCausalLM) and not isinstance(assistant, OVModelForCausalLM):
            if not assistant.stateful:
                raise ValueError("The OpenVINO draft must be a stateful export to roll its KV cache back.")
            # same state, plus rollback (over the family class optimum-intel chose, if any): nothing else changes
            family = type(assistant)
            assistant.__class__ = OVModelForCausalLM if family is _OVModelForCausalLM else _with_rollback(family)
        return assistant


_FAMILY_CLASSES: dict[type, type] = {}


def _with_rollback(family: type) -> type:
    """`OVModelForCausalLM` (this package's) over one of optimum-intel's per-family classes, made once per family."""
    if family not in _FAMILY_CLASSES:
        namespace = {"__module__": __name__}
        if issubclass(family, OVModelWithMambaForCausalLM):  # its own forward and cache (generate reads the signature)
            namespace["forward"] = family.forward
        _FAMILY_CLASSES[family] = type(family.__name__, (OVModelForCausalLM, family), namespace)
    return _FAMILY_CLASSES[family]
