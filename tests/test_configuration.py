import json

import pytest

from optimum_dynexec.configuration import (
    CONFIG_NAME,
    DRAFTER_DEFAULTS,
    PROMPT_LOOKUP_NUM_TOKENS,
    EarlyExitConfig,
    SpeculativeConfig,
    config_for_model,
    load_dynexec_config,
)


def test_round_trip(tmp_path):
    config = EarlyExitConfig(
        num_hidden_layers=6,
        exit_layers=[1, 3],
        threshold=0.93,
        criterion="entropy",
        segments=["a.xml", "b.xml", "c.xml"],
        target_agreement=0.99,
        calibration={"agreement": 0.991},
        quantization={"weight_format": "int8"},
    )
    config.save(tmp_path)
    assert load_dynexec_config(tmp_path) == config
    assert config.segment_layers == [(0, 1), (1, 3), (3, 6)]


def test_missing_file_gives_none(tmp_path):
    assert load_dynexec_config(tmp_path) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"exit_layers": []}, "empty"),
        ({"exit_layers": [2, 1]}, "increasing"),
        ({"exit_layers": [0, 2]}, r"\[1, 5\]"),
        ({"exit_layers": [6]}, r"\[1, 5\]"),
        ({"exit_layers": [1], "threshold": 1.2}, "threshold"),
        ({"exit_layers": [1], "criterion": "margin"}, "criterion"),
        ({"exit_layers": [1], "segments": ["a.xml"]}, "segments"),
        ({"exit_layers": [1], "target_agreement": 0.0}, "target_agreement"),
    ],
)
def test_invalid_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyExitConfig(num_hidden_layers=6, **kwargs)


def test_unknown_technique_and_keys(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"technique": "teleport"}))
    with pytest.raises(ValueError, match="unknown technique"):
        load_dynexec_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(
        json.dumps({"technique": "early-exit", "num_hidden_layers": 4, "exit_layers": [1], "speed": 3})
    )
    with pytest.raises(ValueError, match="speed"):
        load_dynexec_config(tmp_path)


def test_drafter_defaults_live_in_the_config():
    # the dataclass defaults are a draft model's; every drafter's come from DRAFTER_DEFAULTS
    assert SpeculativeConfig() == SpeculativeConfig.for_drafter("model")
    eagle = SpeculativeConfig.for_drafter("eagle")
    assert eagle.draft_type == "eagle" and eagle.draft == "draft"
    assert (eagle.num_assistant_tokens, eagle.num_assistant_tokens_schedule, eagle.assistant_confidence_threshold) == (
        DRAFTER_DEFAULTS["eagle"].num_assistant_tokens,
        DRAFTER_DEFAULTS["eagle"].num_assistant_tokens_schedule,
        DRAFTER_DEFAULTS["eagle"].assistant_confidence_threshold,
    )
    lookup = SpeculativeConfig.for_drafter(None)
    assert lookup.draft is None and lookup.prompt_lookup_num_tokens == PROMPT_LOOKUP_NUM_TOKENS
    assert SpeculativeConfig.for_drafter(None, prompt_lookup_num_tokens=3).prompt_lookup_num_tokens == 3
    # a value given overrides its default only
    chosen = SpeculativeConfig.for_drafter("eagle", num_assistant_tokens=6, prompt_lookup_num_tokens=4)
    assert chosen.num_assistant_tokens == 6 and chosen.prompt_lookup_num_tokens == 4
    assert chosen.num_assistant_tokens_schedule == DRAFTER_DEFAULTS["eagle"].num_assistant_tokens_schedule
    assert (
        SpeculativeConfig.for_drafter("model", assistant_confidence_threshold=0.0).assistant_confidence_threshold == 0
    )


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((None,), {"num_assistant_tokens": 3}, "num_assistant_tokens"),
        ((None,), {"prompt_lookup_num_tokens": 0}, "positive"),
        (("medusa",), {}, "draft_type"),
        (("model",), {"num_assistant_tokens_schedule": "wild"}, "schedule"),
        (("eagle",), {"assistant_confidence_threshold": 1.0}, r"\[0, 1\)"),
    ],
)
def test_drafter_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpeculativeConfig.for_drafter(*args, **kwargs)


@pytest.mark.parametrize("text", ['{"technique": "early-exit", ', "[1, 2]", "\udcff"], ids=["cut", "list", "bytes"])
def test_corrupt_config_names_the_file(tmp_path, text):
    path = tmp_path / CONFIG_NAME
    if text == "\udcff":
        path.write_bytes(b"\xff\xfe{")
    else:
        path.write_text(text)
    with pytest.raises(ValueError, match=CONFIG_NAME) as error:
        load_dynexec_config(tmp_path)
    assert str(path) in str(error.value)


def test_each_model_class_reads_only_its_own_technique(tmp_path):
    config = EarlyExitConfig(num_hidden_layers=6, exit_layers=[1, 3], segments=["a.xml", "b.xml", "c.xml"])
    (tmp_path / "sub").mkdir()
    config.save(tmp_path / "sub")
    assert config_for_model(tmp_path, EarlyExitConfig, "an early-exit classifier", subfolder="sub") == config
    with pytest.raises(ValueError, match="holds a early-exit model, not a speculative causal LM"):
        config_for_model(tmp_path / "sub", SpeculativeConfig, "a speculative causal LM")
    assert config_for_model(tmp_path, EarlyExitConfig, "an early-exit classifier") is None  # no config here
    assert config_for_model("org/some-hub-model", SpeculativeConfig, "a speculative causal LM") is None
