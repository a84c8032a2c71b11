"""optimum-dynexec: dynamic execution (early exit, speculative decoding, adaptive diffusion) for Optimum on OpenVINO.

The runtime classes are imported lazily so that `optimum-cli` stays fast to start.
"""

from typing import TYPE_CHECKING

from . import moved

__version__ = "0.1.0"

moved.install()  # the proving ground's old module names (`optimum_dynexec.prepare`, ...) warn and resolve

_LAZY = {
    "OVModelForSequenceClassification": ".modeling_early_exit",
    "EarlyExitClassifierOutput": ".modeling_early_exit",
    "EarlyExitConfig": ".configuration",
    "export_early_exit": ".exporters.early_exit",
    "OVModelForCausalLM": ".modeling_decoder",
    "RowStreamers": ".streamers",
    "OVStableDiffusionPipeline": ".modeling_diffusion",
    "OVStableDiffusionXLPipeline": ".modeling_diffusion",
    "OVLatentConsistencyModelPipeline": ".modeling_diffusion",
    "StepSaverPipelineOutput": ".modeling_diffusion",
    "StepSaverXLPipelineOutput": ".modeling_diffusion",
    "StepSaverConfig": ".configuration",
}

if TYPE_CHECKING:
    from .configuration import EarlyExitConfig, StepSaverConfig
    from .exporters.early_exit import export_early_exit
    from .modeling_decoder import OVModelForCausalLM
    from .modeling_diffusion import (
        OVLatentConsistencyModelPipeline,
        OVStableDiffusionPipeline,
        OVStableDiffusionXLPipeline,
        StepSaverPipelineOutput,
        StepSaverXLPipelineOutput,
    )
    from .modeling_early_exit import EarlyExitClassifierOutput, OVModelForSequenceClassification
    from .streamers import RowStreamers


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EarlyExitClassifierOutput",
    "EarlyExitConfig",
    "OVLatentConsistencyModelPipeline",
    "OVModelForCausalLM",
    "OVModelForSequenceClassification",
    "OVStableDiffusionPipeline",
    "OVStableDiffusionXLPipeline",
    "RowStreamers",
    "StepSaverConfig",
    "StepSaverPipelineOutput",
    "StepSaverXLPipelineOutput",
    "export_early_exit",
    "__version__",
]
