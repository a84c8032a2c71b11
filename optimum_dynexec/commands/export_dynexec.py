"""`optimum-cli export dynexec`: export a model with its dynamic parts attached."""

from __future__ import annotations

import logging
import sys
from argparse import ArgumentParser
from pathlib import Path

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

logger = logging.getLogger(__name__)

TASKS = ("text-classification",)


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
    q = parser.add_argument_group("NNCF compression (stacked on every part)")
    q.add_argument(
        "--quant-mode",
        choices=("int8",),
        default=None,
        help="Post-training INT8 quantization of weights and activations, calibrated on --train-file.",
    )
    q.add_argument("--weight-format", choices=("fp32", "int8", "int4"), default=None, help="Weight-only compression.")
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


def _parse_exit_layers(values: list[str]) -> list[int] | str | None:
    if values == ["auto"]:
        return "auto"
    if values == ["all"]:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--exit-layers takes `auto`, `all` or layer numbers, got {' '.join(values)}.") from None
