"""The numerics guard (`ftrecipes.train.numerics`) inside a real HF Trainer on a tiny random Llama:
a batch with no supervised token never becomes NaN, `skip` leaves the weights of a bad step
untouched and tolerates at most `max_consecutive` in a row, a non-finite loss aborts before the
optimizer step. The CLI path (exit 4, the kept checkpoint) is in test_reliability_product.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ftrecipes.errors import Diverged, ExitCode  # noqa: E402
from ftrecipes.train.numerics import NumericsGuard  # noqa: E402


class Snapshots(transformers.TrainerCallback):
    """The weights after every optimizer step, by step (0: before the first)."""

    def __init__(self):
        self.after, self.logs = {}, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.after[0] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


class Poison(transformers.TrainerCallback):
    """During the listed steps, scales one parameter's gradient (`grad`) or the logits (`loss`) by inf."""

    def __init__(self, steps, where: str):
        self.steps, self.where, self.handle = set(steps), where, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 in self.steps:
            if self.where == "grad":
                self.handle = model.model.layers[0].mlp.up_proj.weight.register_hook(lambda g: g * float("inf"))
            else:
                self.handle = model.lm_head.register_forward_hook(lambda m, i, out: out * float("inf"))

    def on_step_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def run(tmp_path, rows, *, guard=None, callbacks=(), steps=4, accumulation=1):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=1,
                             gradient_accumulation_steps=accumulation, learning_rate=1e-2, report_to=[], use_cpu=True,
                             seed=0, save_strategy="no", disable_tqdm=True, logging_steps=1)
    snapshots = Snapshots()
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      callbacks=[*( [guard] if guard else []), *callbacks, snapshots])
    if guard is not None:
        guard.attach(trainer)
    trainer.train()
    trainer.logged = snapshots.logs  # what later callbacks (MetricsJsonl) got
    return trainer, snapshots.after


def rows(n=8, empty=()):
    ids = torch.randint(0, 64, (n, 12), generator=torch.Generator().manual_seed(1)).tolist()
    return [{"input_ids": x, "labels": [-100] * len(x) if i in empty else x} for i, x in enumerate(ids)]


def finite(weights) -> bool:
    return all(torch.isfinite(t).all() for t in weights.values())


def unchanged_steps(after) -> list[int]:
    """Steps after which the weights are those of the step before."""
    return [s for s in sorted(after)[1:] if all(torch.equal(after[s - 1][k], after[s][k]) for k in after[s])]


def test_a_batch_without_supervised_tokens_is_counted_skipped_and_never_nan(tmp_path, capsys):
    # what the guard prevents: the loss of such a step is 0/0 (its gradients happen to be 0, so
    # the Trainer logs a stand-in and AdamW still moves the weights on its momentum)
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    ids = torch.tensor([rows(1)[0]["input_ids"]])
    assert torch.isnan(tiny(input_ids=ids, labels=torch.full_like(ids, -100), num_items_in_batch=torch.tensor(0)).loss)

    # 4 rows, one step each, shuffled: row 1 (all labels -100) lands in one of the steps
    guard = NumericsGuard("abort")
    trainer, after = run(tmp_path, rows(4, empty={1}), guard=guard, steps=4)
    assert finite(after[4]) and guard.empty_batches == 1 and guard.skipped_steps == 0
    assert len(unchanged_steps(after)) == 1  # the empty step: no update at all
    assert "no supervised token" in capsys.readouterr().err
    logged = [row for row in trainer.logged if "loss" in row]
    assert all(row["loss"] == row["loss"] for row in logged)  # no NaN logged either
    assert sum(row.get("empty_batches", 0) for row in logged) == 1  # the field metrics.jsonl gets


def test_an_empty_micro_batch_among_others_adds_nothing_and_the_step_still_runs(tmp_path):
    guard = NumericsGuard("abort")
    _, after = run(tmp_path, rows(4, empty={2}), guard=guard, steps=2, accumulation=2)
    assert guard.empty_batches == 1 and finite(after[2]) and unchanged_steps(after) == []


def test_skip_leaves_the_weights_of_a_bad_step_untouched_then_goes_on(tmp_path, capsys):
    guard = NumericsGuard("skip", max_consecutive=1)
    _, after = run(tmp_path, rows(), guard=guard, callbacks=[Poison({3}, "grad")], steps=5)
    assert guard.skipped_steps == 1 and finite(after[5])
    assert all(torch.equal(after[2][k], after[3][k]) for k in after[2])
    assert any(not torch.equal(after[3][k], after[4][k]) for k in after[3])
    assert "step 3: the gradient norm was not finite on rank 0; skipped" in capsys.readouterr().err


def test_skip_aborts_after_max_consecutive_bad_steps(tmp_path):
    guard = NumericsGuard("skip", max_consecutive=1)
    with pytest.raises(Diverged) as caught:
        run(tmp_path, rows(), guard=guard, callbacks=[Poison({2, 3}, "grad")], steps=5)
    assert "training diverged at step 3" in caught.value.message and "2 bad steps in a row" in caught.value.message
    assert caught.value.exit_code == ExitCode.DIVERGED == 4


def test_a_non_finite_loss_aborts_before_the_optimizer_step(tmp_path):
    guard = NumericsGuard("abort")
    snapshots = Snapshots()
    with pytest.raises(Diverged) as caught:
        run(tmp_path, rows(), guard=guard, callbacks=[Poison({2}, "loss"), snapshots], steps=4)
    assert "training diverged at step 2: the loss was not finite on rank 0" in caught.value.message
    assert "No checkpoint had committed yet" in caught.value.message
    assert sorted(snapshots.after) == [0, 1] and finite(snapshots.after[1])
