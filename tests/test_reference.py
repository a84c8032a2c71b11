"""The proving ground's plumbing: budgets key the cache, preparation steps, the demo's order and estimates."""

import importlib
import json
import sys
import warnings

import pytest

from optimum_dynexec.reference import budgets, demo, prepare
from optimum_dynexec.reference.benchmark.timing import save_results


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIMUM_DYNEXEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(budgets.PRESET_ENV, raising=False)
    return tmp_path / "cache"


def test_presets_key_every_trained_model(empty_cache, monkeypatch):
    full = budgets.PRESETS["full"]
    ci = budgets.PRESETS["ci"]
    assert prepare.draft_run_dir(full) != prepare.draft_run_dir(ci)
    assert prepare.eagle_run_dir(full) != prepare.eagle_run_dir(ci)
    assert "-m24-" in prepare.draft_run_dir(full).name and "-m4-" in prepare.draft_run_dir(ci).name
    full_classifier = prepare.sentiment_classifier_dir()
    full_exits = prepare.early_exit_export_dir("fp32", classifier=full_classifier)
    monkeypatch.setenv(budgets.PRESET_ENV, "ci")
    # the exit heads' text budget keys the export even for the same classifier
    assert prepare.early_exit_export_dir("fp32", classifier=full_classifier) != full_exits
    assert budgets.active_budget() == ci
    assert prepare.sentiment_classifier_dir() != full_classifier
    assert prepare.early_exit_export_dir("fp32") != prepare.early_exit_export_dir("fp32", classifier=full_classifier)
    from optimum_dynexec.reference.diffusion import stepsaver_export_path

    ci_export = stepsaver_export_path("fp32")
    monkeypatch.setenv(budgets.PRESET_ENV, "full")
    assert stepsaver_export_path("fp32") != ci_export


def test_a_changed_recipe_setting_changes_the_run_folder():
    config = prepare.draft_config(budgets.PRESETS["full"])
    assert budgets.settings_key({**vars(config), "seq_len": config.seq_len + 1}) != budgets.settings_key(vars(config))


def test_bad_presets_and_budgets_are_refused(monkeypatch):
    monkeypatch.setenv(budgets.PRESET_ENV, "huge")
    with pytest.raises(ValueError, match="huge"):
        budgets.active_budget()
    with pytest.raises(ValueError, match="draft_minutes"):
        budgets.Budget(draft_minutes=0)
    with pytest.raises(ValueError, match="exit_head_texts"):
        budgets.Budget(exit_head_texts=-1)
    with pytest.raises(ValueError, match="Unknown step 'everything'"):
        prepare.expand_steps(["everything"])


def test_steps_expand_in_preparation_order():
    assert prepare.expand_steps(["eagle", "llm"]) == ["llm-base", "draft", "eagle"]
    assert prepare.expand_steps(["all"]) == [s for s in prepare.STEPS if s not in prepare.OPTIONAL_STEPS]
    assert prepare.expand_steps(["gemma"]) == prepare.OPTIONAL_STEPS == ["gemma-base", "gemma-eagle"]


def test_nothing_is_prepared_in_an_empty_cache(empty_cache):
    assert not any(prepare.is_step_ready(s) for s in prepare.STEPS)


def test_demo_shows_the_cheapest_technique_first():
    order = list(prepare.STEPS)
    assert demo.SECTIONS[0].needs == ["llm-base"]
    last_needed = [max(order.index(s) for s in section.needs) for section in demo.SECTIONS]
    assert last_needed == sorted(last_needed)


def test_demo_estimate_uses_this_machines_timings(empty_cache):
    guess = demo.FIRST_GUESS_MINUTES["full"]
    assert demo.remaining_minutes(["llm-base", "draft"]) == guess["llm-base"] + guess["draft"]
    prepare._record_timing("draft", 120.0)
    assert json.loads((empty_cache / prepare.TIMINGS_FILE).read_text()) == {"full": {"draft": 120.0}}
    assert demo.remaining_minutes(["llm-base", "draft"]) == guess["llm-base"] + 2.0
    # the diffusion models build in a second process beside the rest
    assert demo.remaining_minutes(["diffusion", "draft"]) == max(guess["diffusion"], 2.0)


def test_demo_without_preparation_skips_what_is_missing(empty_cache, capsys):
    assert demo.main(["--no-prepare"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped: not prepared") == len(demo.SECTIONS)


def test_benchmark_results_record_the_budget_of_the_models_they_measured(empty_cache, tmp_path, monkeypatch):
    monkeypatch.setenv(budgets.PRESET_ENV, "ci")
    save_results({"rows": []}, tmp_path / "out", "x")
    saved = json.loads((tmp_path / "out" / "x.json").read_text())
    assert saved["prepared_with"] == {"preset": "ci", "budget": budgets.PRESETS["ci"].to_dict()}


@pytest.mark.parametrize("old, new", [("optimum_dynexec.austen", "optimum_dynexec.reference.austen")])
def test_old_module_names_warn_and_resolve_to_the_moved_module(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new
    assert any(issubclass(w.category, FutureWarning) and new in str(w.message) for w in caught)


def test_a_failed_step_stops_the_diffusion_process_at_once(empty_cache, monkeypatch):
    class Child:
        terminated = False

        def __init__(self, *args, **kwargs):
            Child.instance = self

        def terminate(self):
            self.terminated = True

        def wait(self):
            return -15 if self.terminated else 0

    def fail(names):
        raise RuntimeError("llm-base broke")

    monkeypatch.setattr(prepare.subprocess, "Popen", Child)
    monkeypatch.setattr(prepare, "run_steps", fail)
    monkeypatch.setattr(prepare.torch, "set_num_threads", lambda n: None)
    with pytest.raises(RuntimeError, match="llm-base broke"):
        prepare.main(["all", "--jobs", "2"])
    assert Child.instance.terminated
