"""`optimum-cli export dynexec`: export a model with its dynamic parts attached."""

from __future__ import annotations

import logging
import sys
from argparse import ArgumentParser
from pathlib import Path

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

logger = logging.getLogger(__name__)

TASKS = ("text-classification", "text-generation-with-past", "text-to-image")


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
        help="Draft tokens per target call to start with (default 5 for a draft model, 3 for an EAGLE head).",
    )
    sd.add_argument(
        "--assistant-schedule",
        choices=("constant", "heuristic", "heuristic_transient"),
        default=None,
        help=(
            "Lookahead schedule: heuristic grows on full acceptance, shrinks on rejection and backs off a useless "
            "draft (default for a draft model); constant (default for an EAGLE head)."
        ),
    )
    sd.add_argument(
        "--assistant-confidence-threshold",
        type=float,
        default=None,
        help="Stop drafting when the draft's top probability falls below this (0 disables; default 0.4, EAGLE 0).",
    )
    sd.add_argument(
        "--prompt-lookup-num-tokens",
        type=int,
        default=None,
        help=(
            "Tokens copied from the prompt per call (default 5 without --draft-model); with --draft-model, prompt "
            "lookup proposes where the text repeats and the draft elsewhere."
        ),
    )
    ss = parser.add_argument_group("StepSaver (text-to-image)")
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
    ss.add_argument("--default-steps", type=int, default=50, help="Fixed steps, and the adaptive maximum (50).")
    ss.add_argument("--step-grid", type=int, nargs="+", default=None, help="Step counts tried when labelling.")
    ss.add_argument("--seeds-per-prompt", type=int, default=2, help="Seeds labelled per training prompt (2).")
    ss.add_argument(
        "--ssim-threshold", type=float, default=0.9, help="SSIM to the reference that counts as enough (0.9)."
    )
    ss.add_argument("--step-quantile", type=float, default=0.5, help="Predicted-steps quantile (0.5: median).")
    ss.add_argument("--step-batching", choices=("group", "max"), default="group", help="Batches: per-prompt steps.")
    ss.add_argument("--step-tolerance", type=float, default=0.05, help="Adaptive stop's tolerance (0.05).")
    ss.add_argument(
        "--predictor-weight-format", choices=("fp32", "int8"), default=None, help="Predictor weight compression."
    )
    q = parser.add_argument_group("NNCF compression (stacked on every part)")
    q.add_argument(
        "--quant-mode",
        choices=("int8", "hybrid"),
        default=None,
        help="int8: post-training INT8 quantization of weights and activations, calibrated on --train-file; "
        "hybrid (text-to-image): INT8 weights everywhere and INT8 activations in the UNet, calibrated on "
        "--train-prompts.",
    )
    q.add_argument("--weight-format", choices=("fp32", "int8", "int4"), default=None, help="Weight-only compression.")
    q.add_argument(
        "--draft-weight-format",
        choices=("fp32", "int8", "int4"),
        default=None,
        help="Weight-only compression of the draft (default: as --weight-format).",
    )
    q.add_argument("--num-samples", type=int, default=300, help="Calibration samples for --quant-mode.")


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
        from ..exporters.quantization import quantization_config_from_flags

        args = self.args
        if args.task == "text-to-image":
            return _export_text_to_image(args)
        exit_layers = _parse_exit_layers(args.exit_layers)
        qconfig = quantization_config_from_flags(args.quant_mode, args.weight_format, args.num_samples)
        if args.task == "text-classification":
            from ..exporters.early_exit import export_early_exit
            from ..training.exit_heads import ExitHeadTrainingConfig

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
        elif args.task == "text-generation-with-past":
            from ..configuration import SpeculativeConfig
            from ..exporters.speculative import export_speculative

            if args.draft_model is not None:
                from ..exporters.speculative import is_eagle_draft

                defaults = EAGLE_LOOKAHEAD if is_eagle_draft(Path(args.draft_model)) else DRAFT_LOOKAHEAD
                chosen = (args.num_assistant_tokens, args.assistant_schedule, args.assistant_confidence_threshold)
                k, schedule, confidence = (d if c is None else c for c, d in zip(chosen, defaults))
                config = SpeculativeConfig(
                    num_assistant_tokens=k,
                    num_assistant_tokens_schedule=schedule,
                    assistant_confidence_threshold=confidence,
                    prompt_lookup_num_tokens=args.prompt_lookup_num_tokens,
                )
            else:
                config = SpeculativeConfig(draft=None, prompt_lookup_num_tokens=args.prompt_lookup_num_tokens or 5)
            draft_format = args.draft_weight_format or args.weight_format
            export_speculative(
                args.model,
                args.output,
                args.draft_model,
                config,
                qconfig,
                quantization_config_from_flags(weight_format=draft_format),
            )


# lookahead defaults (tokens, schedule, confidence stop) per drafter, measured on SmolLM2-135M (benchmarks/)
DRAFT_LOOKAHEAD = (5, "heuristic", 0.4)
EAGLE_LOOKAHEAD = (3, "constant", 0.0)


def _export_text_to_image(args) -> None:
    from ..data import read_text_file
    from ..exporters.diffusion import diffusion_quantization_config, export_stepsaver, train_and_export_stepsaver
    from ..exporters.quantization import quantization_config_from_flags

    if args.train_step_predictor and args.step_predictor is not None:
        raise ValueError("Give --train-step-predictor or --step-predictor, not both.")
    prompts = read_text_file(args.train_prompts).texts if args.train_prompts is not None else None
    qconfig = diffusion_quantization_config(args.quant_mode, args.weight_format, prompts, args.num_samples)
    pconfig = quantization_config_from_flags(weight_format=args.predictor_weight_format)
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
        raise ValueError("--train-step-predictor needs --train-prompts (a .txt file, one prompt per line).")
    if args.predictor_base is None:
        raise ValueError(
            "--train-step-predictor needs --predictor-base: a small transformers text encoder folder to fine-tune "
            "(e.g. all-MiniLM-L6-v2)."
        )
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


def _parse_exit_layers(values: list[str]) -> list[int] | str | None:
    if values == ["auto"]:
        return "auto"
    if values == ["all"]:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--exit-layers takes `auto`, `all` or layer numbers, got {' '.join(values)}.") from None
