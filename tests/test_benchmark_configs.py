"""The benchmark presets in configs/ load and validate."""

from pathlib import Path

import pytest

from optimum_dynexec.reference.benchmark.early_exit import EarlyExitBenchConfig, format_table
from optimum_dynexec.reference.benchmark.serving import ServingBenchConfig
from optimum_dynexec.reference.benchmark.speculative import SpeculativeBenchConfig

CONFIGS = Path(__file__).parent.parent / "configs"


def test_presets_load():
    ee = EarlyExitBenchConfig.from_file(CONFIGS / "early_exit.json")
    assert ee.quantization == ["fp32", "int8"] and all(0 <= t <= 1 for t in ee.thresholds)
    sd = SpeculativeBenchConfig.from_file(CONFIGS / "speculative.json")
    assert sd.max_new_tokens == 128 and sd.weight_formats == ["fp32"]
    compressed = SpeculativeBenchConfig.from_file(CONFIGS / "speculative_compressed.json")
    assert compressed.weight_formats == ["int8", "int4"] and compressed.name == "speculative_compressed"
    assert compressed.stateful_row and not sd.stateful_row
    assert compressed.one_request_row and sd.one_request_row
    assert compressed.compressed_precisions == ["default", "f32"] and sd.compressed_precisions == ["default"]


@pytest.mark.parametrize("kwargs", [{"thresholds": []}, {"thresholds": [1.5]}, {"rounds": 0}])
def test_early_exit_bench_config_errors(kwargs):
    with pytest.raises(ValueError):
        EarlyExitBenchConfig(**kwargs)


def test_speculative_bench_config_errors():
    with pytest.raises(ValueError, match="precisions"):
        SpeculativeBenchConfig(precisions=["fp64"])
    with pytest.raises(ValueError, match="weight_formats"):
        SpeculativeBenchConfig(weight_formats=["int2"])
    with pytest.raises(ValueError, match="draft_weight_format"):
        SpeculativeBenchConfig(draft_weight_format="int3")
    with pytest.raises(ValueError, match="draft_precision"):
        SpeculativeBenchConfig(draft_precision="fp8")
    with pytest.raises(ValueError, match="draft_confidence"):
        SpeculativeBenchConfig(draft_confidence=[0.4, 1.0])
    with pytest.raises(ValueError, match="precisions"):
        SpeculativeBenchConfig(compressed_precisions=["fp16x"])
    with pytest.raises(ValueError, match="eagle_schedule"):
        SpeculativeBenchConfig(eagle_schedule="wild")
    with pytest.raises(ValueError, match="eagle_confidence"):
        SpeculativeBenchConfig(eagle_confidence=1.0)
    with pytest.raises(ValueError, match="eagle_num_tokens"):
        SpeculativeBenchConfig(eagle_num_tokens=[0])


def test_early_exit_table_has_a_row_per_setting():
    row = {
        "precision": "fp32",
        "setting": "plain",
        "accuracy": 0.9,
        "agreement_full_same_precision": 1.0,
        "mean_exit_layer": 6.0,
        "batch1_mean_ms": 1.0,
        "batch1_p50_ms": 1.0,
        "batch1_p90_ms": 1.2,
        "speedup_batch1": 1.0,
        "batch32_texts_per_s": 500.0,
        "speedup_batch32": 1.0,
        "speedup_batch1_vs_fp32_plain": 1.0,
        "speedup_batch32_vs_fp32_plain": 1.0,
    }
    table = format_table({"rows": [row, {**row, "setting": "calibrated", "speedup_batch32": 2.5}]})
    assert len(table.splitlines()) == 4 and "calibrated" in table and "2.50" in table


def test_stepsaver_preset_and_errors():
    from optimum_dynexec.reference.benchmark.stepsaver import StepSaverBenchConfig
    from optimum_dynexec.reference.benchmark.stepsaver import format_table as stepsaver_table

    config = StepSaverBenchConfig.from_file(CONFIGS / "stepsaver.json")
    assert config.quantizations == ["fp32", "int8"] and "predictor" in config.methods
    with pytest.raises(ValueError, match="Unknown"):
        StepSaverBenchConfig(methods=["fastest"])
    with pytest.raises(ValueError, match="positive"):
        StepSaverBenchConfig(num_prompts=0)
    row = {
        "quantization": "fp32",
        "method": "predictor",
        "mean_steps": 15.0,
        "step_reduction": 3.33,
        "seconds_per_image": 0.05,
        "speedup": 2.9,
        "judge_accuracy": 0.9,
        "ssim_to_reference": 0.8,
        "fid_judge": 3.0,
    }
    table = stepsaver_table({"rows": [row, {**row, "method": "plain", "speedup": 1.0}]})
    assert len(table.splitlines()) == 4 and "3.33x" in table and "2.90x" in table


def test_common_prefix():
    import torch

    from optimum_dynexec.reference.benchmark.speculative import common_prefix

    a = torch.tensor([1, 2, 3, 4])
    assert common_prefix(a, torch.tensor([1, 2, 9, 4])) == 2
    assert common_prefix(a, a.clone()) == 4 and common_prefix(a, a[:3]) == 3
    assert common_prefix(a, torch.tensor([7, 2, 3, 4])) == 0


def test_modes_bench_config_loads_and_refuses_bad_values():
    from optimum_dynexec.reference.benchmark.modes import ModesBenchConfig

    modes = ModesBenchConfig.from_file(CONFIGS / "speculative_modes.json")
    assert (
        modes.modes == ["sampling", "streaming", "batch", "repeat"]
        and modes.batch_size == 4
        and len(modes.seeds) == 5
        and modes.temperature == 0.7
    )
    with pytest.raises(ValueError, match="Unknown modes"):
        ModesBenchConfig(modes=["beam"])
    with pytest.raises(ValueError, match="top_p"):
        ModesBenchConfig(top_p=0.0)
    with pytest.raises(ValueError, match="precision"):
        ModesBenchConfig(precision="fp8")
    with pytest.raises(ValueError, match="batch_rounds"):
        ModesBenchConfig(batch_rounds=0)
    with pytest.raises(ValueError, match="EAGLE draft lengths"):
        ModesBenchConfig(eagle_sampling_num_tokens=0)


def test_sampling_rows_run_the_eagle_head_with_its_own_draft_length():
    from optimum_dynexec.reference.benchmark.modes import ModesBenchConfig, _sampling_drafters

    drafters = {
        "prompt lookup k=5": {"prompt_lookup_num_tokens": 5},
        "EAGLE k=3 + lookup": {"assistant_model": "head", "num_assistant_tokens": 3, "prompt_lookup_num_tokens": 5},
    }
    same = _sampling_drafters(drafters, ModesBenchConfig())
    assert same == drafters
    short = _sampling_drafters(drafters, ModesBenchConfig(eagle_sampling_num_tokens=2))
    assert list(short) == ["prompt lookup k=5", "EAGLE k=2 + lookup"]
    assert (
        short["EAGLE k=2 + lookup"]["num_assistant_tokens"] == 2
        and drafters["EAGLE k=3 + lookup"]["num_assistant_tokens"] == 3
    )


def test_serving_preset_loads_and_checks_its_settings():
    config = ServingBenchConfig.from_file(CONFIGS / "serving.json")
    assert config.concurrency == [1, 4, 16] and config.ray_replicas == 2
    for bad in ({"techniques": ["teleport"]}, {"concurrency": [0]}, {"precision": "fp64"}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            ServingBenchConfig(**bad)
