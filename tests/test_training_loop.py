"""The training loop every recipe uses: exact resume, settings fingerprint, transformers' schedules, time budget."""

import random
import types

import numpy as np
import pytest
import torch
from tiny_models import random_texts
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_cosine_with_min_lr_schedule_with_warmup,
)

from optimum_dynexec.data import TextDataset
from optimum_dynexec.training import loop as loop_module
from optimum_dynexec.training.classifier import CHECKPOINT_FILE, FineTuneConfig, fine_tune_classifier
from optimum_dynexec.training.loop import CALIBRATION_STEPS, CHECKPOINT_FORMAT, TrainingLoop, batch_indices

DATA = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
SETTINGS = dict(
    max_steps=10,
    learning_rate=1e-2,
    schedule="cosine_with_min_lr",
    schedule_kwargs={"min_lr_rate": 0.1},
    warmup_steps=2,
    weight_decay=0.1,
    save_every=3,
    settings={"width": 16},
)


class Interrupt(Exception):
    """Raised by a callback to cut training short, as a kill would."""


def run(checkpoint, stop_at=None, tick=None, **overrides):
    """Trains a small MLP with dropout on noisy data (every global RNG is used); returns the model, the loop and the
    learning rate of every step run."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    loop = TrainingLoop(model, checkpoint=checkpoint, **{**SETTINGS, **overrides})
    lrs = []

    def loss_fn(step):
        if tick is not None:
            tick(step)
        lrs.append(loop.optimizer.param_groups[0]["lr"])
        x = DATA[batch_indices(step, len(DATA), 8, seed=0)]
        x = x + 0.01 * torch.randn_like(x) + 0.01 * np.random.rand() + 0.01 * random.random()
        return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()

    def on_step_end(step, loss):
        loop.extras["seen"] = loop.extras.get("seen", 0) + 1  # recipe state saved with the checkpoint
        if step == stop_at:
            raise Interrupt

    loop.run(loss_fn, on_step_end)
    return model, loop, lrs


def transformers_schedule(steps: int, warmup: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=SETTINGS["learning_rate"])
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, steps, min_lr_rate=0.1)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight, loop, lrs = run(tmp_path / "a" / "state.pt")
    assert loop.step == 10 and len(loop.losses) == 10 and not straight.training
    assert lrs == transformers_schedule(10, 2)

    with pytest.raises(Interrupt):
        run(tmp_path / "b" / "state.pt", stop_at=8)  # the checkpoint of step 6 stays behind
    resumed, again, resumed_lrs = run(tmp_path / "b" / "state.pt")
    assert again.resumed_from == 6 and again.step == 10
    assert again.losses == loop.losses and again.extras["seen"] == 10
    assert resumed_lrs == lrs[6:]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

    # the step budget may grow (the schedule spans the new one); other settings must match, and are named
    _, longer, _ = run(tmp_path / "b" / "state.pt", max_steps=12)
    assert longer.resumed_from == 10 and longer.step == 12
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 0.01 there, 0.02 now, width"):
        run(tmp_path / "b" / "state.pt", learning_rate=2e-2, settings={"width": 32})


def test_a_checkpoint_of_another_format_starts_over(tmp_path, caplog):
    path = tmp_path / "state.pt"
    torch.save({"model": {}, "step": 3}, path)  # e.g. a recipe's checkpoint before the shared loop
    _, loop, _ = run(path)
    assert "not a checkpoint of this training loop" in caplog.text
    assert loop.resumed_from == 0 and loop.step == 10
    assert torch.load(path, weights_only=False)["format"] == CHECKPOINT_FORMAT
    with pytest.raises(ValueError, match="other trainable weights"):
        TrainingLoop(torch.nn.Linear(8, 2), checkpoint=path, **SETTINGS)


def test_time_budget_fixes_the_step_count_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def second_per_step(step):
        now[0] += 1.0

    budget = dict(max_steps=1000, max_minutes=1.0, warmup_steps=CALIBRATION_STEPS + 1, save_every=10)
    straight, loop, lrs = run(tmp_path / "a.pt", tick=second_per_step, **budget)
    # after the calibration steps at 1 s/step, 60 steps fit the minute: the schedule spans exactly those
    assert loop.total_steps == loop.step == 60 and not loop.stopped_by_time
    assert lrs == transformers_schedule(60, CALIBRATION_STEPS + 1)
    assert torch.load(tmp_path / "a.pt", weights_only=False)["total_steps"] == 60

    with pytest.raises(Interrupt):
        run(tmp_path / "b.pt", stop_at=35, tick=second_per_step, **budget)
    now[0] += 1000.0  # the clock moves on between the runs; only time in the loop counts
    resumed, again, _ = run(tmp_path / "b.pt", tick=second_per_step, **budget)
    assert again.resumed_from == 30 and again.total_steps == again.step == 60
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)

    def slowing_down(step):  # 1 s/step while calibrating, then 3 s/step: the budget still caps the run
        now[0] += 1.0 if step < 10 else 3.0

    _, capped, _ = run(tmp_path / "c.pt", tick=slowing_down, **budget)
    assert capped.stopped_by_time and capped.step < capped.total_steps == 60 and capped.elapsed >= 60


def test_batch_indices_are_a_fresh_permutation_every_epoch():
    epoch0 = np.concatenate([batch_indices(s, 10, 3, seed=4) for s in range(3)])
    epoch1 = np.concatenate([batch_indices(s, 10, 3, seed=4) for s in range(3, 6)])
    assert len(set(epoch0)) == len(set(epoch1)) == 9 and not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(batch_indices(4, 10, 3, seed=4), epoch1[3:6])
    assert sorted(batch_indices(0, 5, 8, seed=0)) == [0, 1, 2, 3, 4]  # fewer samples than a batch: all of them


def test_fine_tuning_a_classifier_resumes_exactly(tiny_bert, tmp_path):
    texts = random_texts(48, seed=5)
    data = TextDataset(texts, [int("good" in t.split()) for t in texts])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = FineTuneConfig(epochs=2, batch_size=8, learning_rate=1e-3, max_length=16, checkpoint_every=4)

    def fresh():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert)

    straight = fine_tune_classifier(fresh(), tokenizer, data, config, tmp_path / "a")
    calls = []

    def die_at_the_seventh_forward(module, args, kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise Interrupt

    model = fresh()
    model.register_forward_pre_hook(die_at_the_seventh_forward, with_kwargs=True)
    with pytest.raises(Interrupt):
        fine_tune_classifier(model, tokenizer, data, config, tmp_path / "b")
    assert torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=False)["step"] == 4
    resumed = fine_tune_classifier(fresh(), tokenizer, data, config, tmp_path / "b")
    assert not resumed.training
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="learning_rate"):
        fine_tune_classifier(fresh(), tokenizer, data, FineTuneConfig(epochs=2, batch_size=8), tmp_path / "b")
