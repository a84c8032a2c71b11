"""`optimum-cli export dynexec`: export a model with its dynamic parts attached."""

from __future__ import annotations

import logging
import sys
from argparse import ArgumentParser
from pathlib import Path

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

from ..configuration import (
    DRAFTER_DEFAULTS,
    HEADS_CONFIG,
    LOOKAHEAD_SCHEDULES,
    PROMPT_LOOKUP_NUM_TOKENS,
    SpeculativeConfig,
)
from ..exporters import quantization

logger = logging.getLogger(__name__)

TASKS = quantization.TASKS
MODEL, EAGLE = DRAFTER_DEFAULTS["model"], DRAFTER_DEFAULTS["eagle"]


def parse_args_dynexec(parser: ArgumentParser) -> None:
    required = parser.add_argument_group("Required arguments")
    required.add_argument("-m", "--model", type=Path, required=True, help="Local transformers model folder.")
    required.add_argument("output", type=Path, help="Folder to write the OpenVINO model and dynexec_config.json to.")
    required.add_argument("--task", choices=TASKS, required=True, help="What the model does.")
    ee = parser.add_argument_group("Early exit (text-classification)")
    ee.add_argument(
        "--exit-layers",
        nargs="+",
        default=["auto"],
        help="1-based encoder layers to exit after; `auto` (default) trains a head after every layer but the last "
        "and keeps the subset with the lowest expected cost at the target agreement; `all` keeps every one.",
    )
    ee.add_argument(
        "--train-file",
        type=Path,
        default=None,
        help="Text to train the exit heads on: a .txt (one text per line) or .csv (`text`, optional "
        "`label` column). Labels are used when given; unlabelled text suffices.",
    )
    ee.add_argument(
        "--target-agreement",
        type=float,
        default=0.99,
        help="Calibrate the loosest threshold whose agreement with the full model on held-out text "
        "reaches this (default 0.99).",
    )
    ee.add_argument(
        "--criterion",
        choices=("confidence", "entropy"),
        default="confidence",
        help="Exit score (default: confidence, the head's top probability).",
    )
    ee.add_argument("--max-train-samples", type=int, default=None, help="Use at most this many training texts.")
    ee.add_argument("--epochs", type=int, default=8, help="Exit-head training epochs (default 8).")
    ee.add_argument("--seed", type=int, default=0)
    sd = parser.add_argument_group("Speculative decoding (text-generation-with-past)")
    sd.add_argument(
        "--draft-model",
        type=Path,
        default=None,
        help=(
            "Draft causal LM folder sharing the target's tokenizer, or an EAGLE head trained for the target "
            "(python -m optimum_dynexec.training.eagle); without it, prompt lookup drafts."
        ),
    )
    sd.add_argument(
        "--num-assistant-tokens",
        type=int,
        default=None,
        help=(
            f"Draft tokens per target call to start with (default {MODEL.num_assistant_tokens} for a draft model, "
            f"{EAGLE.num_assistant_tokens} for an EAGLE head)."
        ),
    )
    sd.add_argument(
        "--assistant-schedule",
        choices=LOOKAHEAD_SCHEDULES,
        default=None,
        help=(
            "Lookahead schedule: heuristic grows on full acceptance, shrinks on rejection and backs off a useless "
            f"draft; constant keeps it (default {MODEL.num_assistant_tokens_schedule} for a draft model, "
            f"{EAGLE.num_assistant_tokens_schedule} for an EAGLE head)."
        ),
    )
    sd.add_argument(
        "--assistant-confidence-threshold",
        type=float,
        default=None,
        help=(
            "Stop drafting when the draft's top probability falls below this (0 disables; default "
            f"{MODEL.assistant_confidence_threshold} for a draft model, {EAGLE.assistant_confidence_threshold} for "
            "an EAGLE head)."
        ),
    )
    sd.add_argument(
        "--prompt-lookup-num-tokens",
        type=int,
        default=None,
        help=(
            f"Tokens copied from the prompt per call (default {PROMPT_LOOKUP_NUM_TOKENS} without --draft-model); with "
            "--draft-model, prompt lookup proposes where the text repeats and the draft elsewhere."
        ),
    )
    ss = parser.add_argument_group("StepSaver (text-to-image: Stable Diffusion, SDXL, latent consistency)")
    ss.add_argument(
        "--train-step-predictor",
        action="store_true",
        help="Label --train-prompts with their fewest sufficient steps on the exported pipeline and train the step "
        "predictor on them (from --predictor-base).",
    )
    ss.add_argument("--train-prompts", type=Path, default=None, help="Prompts to train on, one per line (.txt).")
    ss.add_argument(
        "--step-predictor", type=Path, default=None, help="A step predictor trained already, to attach as it is."
    )
    ss.add_argument(
        "--predictor-base",
        type=Path,
        default=None,
        help="Encoder to fine-tune into the predictor (a transformers folder, e.g. all-MiniLM-L6-v2).",
    )
    ss.add_argument(
        "--step-policy",
        choices=("predictor", "adaptive", "fixed"),
        default=None,
        help="Default step policy (predictor when one is attached, else adaptive).",
    )
    ss.add_argument(
        "--default-steps",
        type=int,
        default=None,
        help="Fixed steps, and the adaptive maximum (default: the pipeline's own, 50 for SD and SDXL, 4 for LCM).",
    )
    ss.add_argument("--step-grid", type=int, nargs="+", default=None, help="Step counts tried when labelling.")
    ss.add_argument("--seeds-per-prompt", type=int, default=2, help="Seeds labelled per training prompt (2).")
    ss.add_argument(
        "--ssim-threshold", type=float, default=0.9, help="SSIM to the reference that counts as enough (0.9)."
    )
    ss.add_argument("--step-quantile", type=float, default=0.5, help="Predicted-steps quantile (0.5: median).")
    ss.add_argument("--step-batching", choices=("group", "max"), default="group", help="Batches: per-prompt steps.")
    ss.add_argument("--step-tolerance", type=float, default=0.05, help="Adaptive stop's tolerance (0.05).")
    ss.add_argument(
        "--predictor-weight-format",
        choices=("fp32", "int8"),
        default=None,
        help="Weight compression of the step predictor (optimum-intel's plain config for the format).",
    )
    q = parser.add_argument_group(
        "NNCF compression (optimum-cli export openvino's options, turned into the same optimum-intel configs and "
        "stacked on every part)"
    )
    quantization.add_quantization_arguments(q)
    q.add_argument(
        "--draft-weight-format",
        choices=quantization.WEIGHT_FORMATS,
        default=None,
        help="Weight-only compression of the draft, with the options above (default: the target's compression).",
    )


class DynexecExportCommand(BaseOptimumCLICommand):
    COMMAND = CommandInfo(name="dynexec", help="Export a model to OpenVINO with dynamic execution attached.")

    @staticmethod
    def parse_args(parser: ArgumentParser):
        return parse_args_dynexec(parser)

    def run(self):
        from ..utils import setup_logging

        setup_logging()
        try:
            self._run()
        except (ValueError, FileNotFoundError, TypeError) as error:
            print(f"optimum-cli export dynexec: error: {error}", file=sys.stderr)
            sys.exit(2)

    def _run(self):
        args = self.args
        _check_request(args)  # before the exporters' imports (seconds): a mistyped path fails at once
        if args.task == "text-to-image":
            return _export_text_to_image(args)
        if args.task == "text-classification":
            return _export_text_classification(args)
        return _export_text_generation(args)


def _export_text_classification(args) -> None:
    from ..exporters.early_exit import export_early_exit
    from ..training.exit_heads import ExitHeadTrainingConfig

    exit_layers = _parse_exit_layers(args.exit_layers)
    qconfig = quantization.quantization_config_from_args(args, task=args.task, model=args.model)
    config = export_early_exit(
        args.model,
        args.output,
        exit_layers=exit_layers,
        train_file=args.train_file,
        target_agreement=args.target_agreement,
        criterion=args.criterion,
        quantization_config=qconfig,
        training_config=ExitHeadTrainingConfig(epochs=args.epochs, seed=args.seed),
        max_train_samples=args.max_train_samples,
        seed=args.seed,
    )
    logger.info("wrote %s: exit layers %s, threshold %.6f", args.output, config.exit_layers, config.threshold)


def _export_text_generation(args) -> None:
    from ..exporters.speculative import draft_type_of, export_speculative

    draft_type = draft_type_of(args.draft_model) if args.draft_model is not None else None
    config = SpeculativeConfig.for_drafter(draft_type, **_lookahead(args))
    target_compressed = args.weight_format is not None or args.quant_mode is not None
    if target_compressed or args.draft_weight_format is None:
        qconfig = quantization.quantization_config_from_args(args, task=args.task, model=args.model)
    else:
        qconfig = None  # the options tune the draft's --draft-weight-format alone
    draft_qconfig = None
    if args.draft_model is not None:
        draft_flags = (
            {"weight_format": args.draft_weight_format, "quant_mode": None} if args.draft_weight_format else {}
        )
        try:
            draft_qconfig = quantization.quantization_config_from_args(
                args, task=args.task, model=args.draft_model, **draft_flags
            )
        except ValueError as error:
            raise ValueError(f"The draft's compression: {error}") from error
    export_speculative(args.model, args.output, args.draft_model, config, qconfig, draft_qconfig)


def _export_text_to_image(args) -> None:
    from ..data import read_text_file
    from ..exporters.diffusion import export_stepsaver, train_and_export_stepsaver

    prompts = read_text_file(args.train_prompts).texts if args.train_prompts is not None else None
    qconfig = quantization.quantization_config_from_args(
        args, task=args.task, model=args.model, calibration_texts=prompts
    )
    pconfig = quantization.quantization_config_from_flags(weight_format=args.predictor_weight_format)
    policy_kwargs = {
        "policy": args.step_policy,
        "default_steps": args.default_steps,
        "quantile": args.step_quantile,
        "batching": args.step_batching,
        "tolerance": args.step_tolerance,
    }
    if not args.train_step_predictor:
        export_stepsaver(
            args.model,
            args.output,
            predictor=args.step_predictor,
            quantization_config=qconfig,
            predictor_quantization_config=pconfig,
            **policy_kwargs,
        )
        return
    if not prompts:
        raise ValueError(f"--train-prompts {args.train_prompts} has no prompts.")
    if args.step_grid is not None:
        policy_kwargs["default_steps"] = max(args.step_grid)
    train_and_export_stepsaver(
        args.model,
        args.output,
        prompts,
        args.predictor_base,
        seeds_per_prompt=args.seeds_per_prompt,
        step_grid=args.step_grid,
        ssim_threshold=args.ssim_threshold,
        quantization_config=qconfig,
        predictor_quantization_config=pconfig,
        **policy_kwargs,
    )


def _check_request(args) -> None:
    """Raises what the exporters would raise for a missing folder or file, an unreadable `--exit-layers` or an
    early-exit export without text, without importing them."""
    markers = ("config.json", "model_index.json")
    if not any((args.model / marker).is_file() for marker in markers):
        raise FileNotFoundError(f"{args.model} is not a transformers model folder (no config.json).")
    for flag in ("train_file", "train_prompts", "draft_model", "step_predictor", "predictor_base"):
        path = getattr(args, flag, None)
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"--{flag.replace('_', '-')} {path} does not exist.")
    if args.task == "text-classification":
        _parse_exit_layers(args.exit_layers)
        if args.train_file is None and not (args.model / HEADS_CONFIG).is_file():
            raise ValueError(
                f"{args.model} has no trained exit heads: pass training text (--train-file, a .txt or .csv file) so "
                "they can be trained by self-distillation."
            )
    if args.draft_weight_format is not None and (args.task != "text-generation-with-past" or not args.draft_model):
        raise ValueError("--draft-weight-format applies to text-generation-with-past with a draft (--draft-model).")
    if args.task == "text-generation-with-past" and args.draft_model is None:
        SpeculativeConfig.for_drafter(None, **_lookahead(args))  # lookahead flags need a draft
    if args.task == "text-to-image" and args.train_step_predictor:
        if args.step_predictor is not None:
            raise ValueError("Give --train-step-predictor or --step-predictor, not both.")
        if args.train_prompts is None:
            raise ValueError("--train-step-predictor needs --train-prompts (a .txt file, one prompt per line).")
        if args.predictor_base is None:
            raise ValueError(
                "--train-step-predictor needs --predictor-base: a small transformers text encoder folder to "
                "fine-tune (e.g. all-MiniLM-L6-v2)."
            )


def _lookahead(args) -> dict:
    return {
        "num_assistant_tokens": args.num_assistant_tokens,
        "num_assistant_tokens_schedule": args.assistant_schedule,
        "assistant_confidence_threshold": args.assistant_confidence_threshold,
        "prompt_lookup_num_tokens": args.prompt_lookup_num_tokens,
    }


def _parse_exit_layers(values: list[str]) -> list[int] | str | None:
    if values == ["auto"]:
        return "auto"
    if values == ["all"]:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--exit-layers takes `auto`, `all` or layer numbers, got {' '.join(values)}.") from None
