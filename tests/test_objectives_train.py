"""DPO, GRPO and continued pretraining for real, on a small tiny model, on the CPU (no mocks).

Each objective x method combination is its own run: prepare -> train (-> evaluate -> export),
through the same stage functions the worker calls. Every training test checks that the objective's
signal improves (loss, preference accuracy or mean reward) and that the saved weights reload with
`from_pretrained`. One small tiny base (built once per module, about 10 s) serves all of them.
"""

from __future__ import annotations

import json
import os
import random
import textwrap

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ftrecipes.config.resolve import resolve
from ftrecipes.data import synth_invoices
from ftrecipes.data.pipeline import run_prepare
from ftrecipes.data.splits import read_split
from ftrecipes.errors import DataError
from ftrecipes.evaluate.heldout import preference_summary, run_evaluate
from ftrecipes.export.merge import run_export
from ftrecipes.model.load import resolve_model_path
from ftrecipes.train.stage import run_train

SMALL = [
    "model.architecture.hidden_size=64",
    "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2",
    "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32",
    "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=40",
    "model.build.pretrain_batch_size=16",
    "logging.progress_bars=false",
]
# A format reward the small base meets now and then (a currency code somewhere), plus brevity.
FORMAT_REWARDS = ('objective.rewards=[{name: regex, pattern: ".*\\b(USD|EUR|GBP|CHF)\\b.*"}, '
                  "{name: length_penalty, max_tokens: 8}]")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One cache (tiny base, prepared data) for the module, outside the user's ~/.cache; the base
    is built here, once."""
    saved = os.environ.get("FTRECIPES_CACHE")
    os.environ["FTRECIPES_CACHE"] = str(tmp_path_factory.mktemp("objectives-cache"))
    threads = torch.get_num_threads()
    resolve_model_path(resolve(SMALL).recipe)
    # The runs below use one thread: these models are too small to gain from more (the numbers
    # are the same), and on a busy machine spinning OpenMP workers made them 5x slower.
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if saved is None:
        os.environ.pop("FTRECIPES_CACHE", None)
    else:
        os.environ["FTRECIPES_CACHE"] = saved


def stages(run_dir, overrides: list[str], names=("prepare", "train")) -> tuple:
    recipe = resolve([*SMALL, *overrides]).recipe
    functions = {"prepare": run_prepare, "train": run_train, "evaluate": run_evaluate, "export": run_export}
    return recipe, {name: functions[name](recipe, run_dir) for name in names}


def metric_rows(run_dir, key: str) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids).logits


def base_model(recipe):
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(recipe), use_safetensors=True)


def ledger_rows(n: int, seed: int) -> list[dict]:
    """Invoice notes to turn into the ledger line the tiny base saw in pretraining (alpaca rows)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        facts = synth_invoices.random_invoice(rng)
        note = synth_invoices.invoice_note(rng, facts)
        rows.append({"instruction": "Write the ledger line for this invoice note.", "input": note,
                     "output": synth_invoices.ledger_line(facts)})
    return rows


def preference_rows(n: int, seed: int) -> list[dict]:
    """Invoice notes with the right, bare JSON answer (chosen) and a chatty one with a wrong status
    (rejected): a preference a small model can pick up and generalize within a few steps."""
    rng = random.Random(seed)
    rows = []
    for row in synth_invoices.sft_rows(n, seed):
        wrong = json.loads(row["output"])
        wrong["status"] = rng.choice([s for s in ("paid", "open", "overdue") if s != wrong["status"]])
        rows.append({"prompt": f"{row['instruction']}\n\n{row['input']}", "chosen": row["output"],
                     "rejected": "Sure! Here is the invoice: " + json.dumps(wrong, separators=(",", ":"))})
    return rows


def test_dpo_lora_on_the_shared_demo_prefers_chosen_answers_on_its_train_split(shared_datasets, tmp_path):
    run_dir = tmp_path / "run"
    recipe, results = stages(run_dir, [
        "recipe=tiny_lora_dpo", f"data.path={shared_datasets / 'dpo_en_demo.json'}", "train.eval_interval=60",
        "evaluate.batch_size=8",
    ], names=("prepare", "train", "evaluate", "export"))
    train = results["train"]
    assert train["steps"] == 60
    assert mean(metric_rows(run_dir, "loss")[-3:]) < train["first_loss"]  # 0.693 at the start, by construction
    assert train["last_reward_accuracy"] > train["first_reward_accuracy"]

    # the acceptance bar: on its train split the tuned model's implicit reward (log p_tuned -
    # log p_base) prefers the chosen answer in more than half of the pairs
    summary, _ = preference_summary(recipe, run_dir, read_split(run_dir, "train"))
    print("dpo train split:", summary)
    assert summary["tuned"]["reward_accuracy"] > 0.6
    assert summary["tuned"]["preference_accuracy"] > summary["base"]["preference_accuracy"]

    held_out = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert {"preference_accuracy", "reward_accuracy", "n_samples"} <= held_out["tuned"].keys()

    # only the trained adapter is saved (not TRL's frozen reference copy), and it reloads
    assert not (run_dir / "adapter" / "ref").exists()
    ids = torch.tensor([[5, 17, 33, 41, 60, 71]])
    base = base_model(recipe)
    base_logits = logits_of(base, ids)
    tuned_logits = logits_of(PeftModel.from_pretrained(base, run_dir / "adapter"), ids)
    merged_logits = logits_of(AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True), ids)
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)
    torch.testing.assert_close(merged_logits, tuned_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method,extra", [
    ("full", ["method.learning_rate=1e-3"]),
    ("full", ["method.learning_rate=1e-3", "objective.precompute_ref_log_probs=true"]),
    # AdaLoRA holds one trainable adapter, so its reference is a frozen copy of the base too
    ("adalora", ["method.learning_rate=2e-2"]),
], ids=["full-reference-copy", "full-precomputed-reference", "adalora-base-copy"])
def test_dpo_against_the_frozen_base_learns_the_preference(tmp_path, method, extra):
    data = tmp_path / "pairs.jsonl"
    synth_invoices.write_jsonl(preference_rows(80, seed=7), data)
    run_dir = tmp_path / "run"
    recipe, results = stages(run_dir, [
        "objective=dpo", f"method={method}", *extra, f"data.path={data}", "data.format=preference",
        "train.max_steps=12", "train.micro_batch_size=8", "train.eval_interval=12", "logging.log_interval=4",
    ])
    train = results["train"]
    assert metric_rows(run_dir, "loss")[-1] < train["first_loss"]
    assert train["last_reward_accuracy"] > 0.5
    assert metric_rows(run_dir, "eval_rewards/accuracies")[-1] > 0.5

    base = base_model(recipe)
    ids = torch.tensor([[5, 17, 33, 41, 60, 71]])
    base_logits = logits_of(base, ids)
    if method == "full":
        tuned = AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True)
    else:
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter")
    assert not torch.allclose(base_logits, logits_of(tuned, ids), atol=1e-4)


def test_grpo_full_raises_the_mean_reward(tmp_path):
    data = tmp_path / "ledger.jsonl"
    synth_invoices.write_jsonl(ledger_rows(160, seed=11), data)
    run_dir = tmp_path / "run"
    recipe, results = stages(run_dir, [
        "objective=grpo", "method=full", "method.learning_rate=1e-3", f"data.path={data}", FORMAT_REWARDS,
        "objective.num_generations=4", "objective.max_completion_length=16", "train.micro_batch_size=16",
        "train.max_steps=40", "train.eval_interval=40", "logging.log_interval=1",
    ])
    rewards = metric_rows(run_dir, "reward")
    print("grpo full: mean reward per step", [round(r, 3) for r in rewards])
    assert len(rewards) == 40
    assert mean(rewards[-8:]) > mean(rewards[:8]) + 0.15
    assert metric_rows(run_dir, "rewards/length_penalty/mean") and metric_rows(run_dir, "eval_reward")
    assert results["train"]["last_reward"] > results["train"]["first_reward"]

    base = base_model(recipe)
    tuned = AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True)
    ids = torch.tensor([[5, 17, 33, 41, 60, 71]])
    assert not torch.allclose(logits_of(base, ids), logits_of(tuned, ids), atol=1e-4)


def test_grpo_lora_with_a_kl_term_and_an_allowlisted_user_reward(tmp_path, monkeypatch):
    """LoRA learns this brevity reward slowly on the small base (+0.05 to +0.15 mean reward over
    30-40 steps in our runs, against about +0.6 for full fine-tuning above), so this run checks the
    direction only; what it adds is the KL term with an adapter and a user reward at train time."""
    (tmp_path / "ft_objective_rewards.py").write_text(textwrap.dedent("""
        def brevity(prompts, completions, completion_ids, scale=16, **kwargs):
            return [-len(ids) / scale for ids in completion_ids]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "ledger.jsonl"
    synth_invoices.write_jsonl(ledger_rows(160, seed=12), data)
    run_dir = tmp_path / "run"
    recipe, _ = stages(run_dir, [
        "objective=grpo", "method=lora", "method.learning_rate=1e-2", "method.lora_dropout=0.0", f"data.path={data}",
        "reward_modules=[ft_objective_rewards]",
        "objective.rewards=[{name: ft_objective_rewards.brevity, args: {scale: 16}}, {name: exact_match, weight: 0.5}]",
        "objective.beta=0.04", "objective.num_generations=4", "objective.max_completion_length=16",
        "train.micro_batch_size=16", "train.max_steps=30", "train.eval_interval=30", "logging.log_interval=1",
    ])
    rewards = metric_rows(run_dir, "reward")
    print("grpo lora: mean reward per step", [round(r, 3) for r in rewards])
    assert mean(rewards[-10:]) > mean(rewards[:10])
    assert metric_rows(run_dir, "rewards/ft_objective_rewards.brevity/mean")
    kl = metric_rows(run_dir, "kl")  # beta > 0: the reference (the initial adapter) is scored every step
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0  # the policy moved away from it

    # the frozen `ref` adapter TRL adds for the KL term is not saved; the trained one reloads
    assert sorted(p.name for p in (run_dir / "adapter").glob("adapter_*")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert not (run_dir / "adapter" / "ref").exists()
    ids = torch.tensor([[5, 17, 33, 41, 60, 71]])
    base = base_model(recipe)
    base_logits = logits_of(base, ids)
    assert not torch.allclose(base_logits, logits_of(PeftModel.from_pretrained(base, run_dir / "adapter"), ids),
                              atol=1e-4)


def test_pretrain_lora_on_raw_text_lowers_the_validation_loss(tmp_path):
    data = tmp_path / "notes.jsonl"
    docs = list(synth_invoices.pretrain_corpus(300, seed=99))
    synth_invoices.write_jsonl([{"text": doc} for doc in docs], data)
    run_dir = tmp_path / "run"
    recipe, results = stages(run_dir, [
        "objective=pretrain", "method=lora", "method.learning_rate=5e-3", f"data.path={data}", "data.format=text",
        "data.max_seq_len=128", "data.split.test=0", "stages=[prepare,train]",
        "train.max_steps=20", "train.eval_interval=10", "logging.log_interval=5",
    ])
    assert results["prepare"]["splits"]["train"] > 200
    train = results["train"]
    assert train["last_loss"] < train["first_loss"]
    eval_losses = metric_rows(run_dir, "eval_loss")
    assert len(eval_losses) == 2 and eval_losses[-1] < eval_losses[0]
    tuned = PeftModel.from_pretrained(base_model(recipe), run_dir / "adapter")
    assert sum(p.numel() for n, p in tuned.named_parameters() if "lora_" in n) == train["trainable_params"]


def test_rows_of_the_wrong_kind_stop_the_train_stage_with_a_data_error(tmp_path):
    data = tmp_path / "answers.jsonl"
    synth_invoices.write_jsonl(synth_invoices.sft_rows(40, seed=3), data)
    run_dir = tmp_path / "run"
    recipe = resolve([*SMALL, "objective=dpo", f"data.path={data}", "data.format=auto"]).recipe
    run_prepare(recipe, run_dir)
    with pytest.raises(DataError) as refused:
        run_train(recipe, run_dir)
    message = refused.value.message
    assert "objective.name=dpo" in message and "data.format=auto" in message
    assert "sft rows" in message and "Acme" not in message  # counts only, never row content
    assert "preference" in refused.value.hint


@pytest.mark.parametrize("objective", ["sft", "dpo", "grpo", "pretrain"])
def test_every_trl_config_takes_precision_and_checkpointing_from_the_recipe(tmp_path, objective):
    """TRL's configs default to bf16 and gradient checkpointing; the recipe decides both."""
    from ftrecipes.train import dpo, grpo, pretrain, sft
    from ftrecipes.train.common import training_arguments

    data = {"dpo": ["data=dpo_en_demo"], "pretrain": ["data=alpaca_en_text", "stages=[prepare,train]"]}
    overrides = [f"objective={objective}", *data.get(objective, [])]
    build = {"sft": sft.sft_config, "dpo": dpo.dpo_config, "grpo": grpo.grpo_config,
             "pretrain": pretrain.pretrain_config}[objective]
    on_cpu = build(resolve([*overrides, "hardware=cpu"]).recipe, tmp_path, has_eval=False)
    assert (on_cpu.bf16, on_cpu.fp16, on_cpu.gradient_checkpointing, on_cpu.use_cpu) == (False, False, False, True)
    checkpointed = build(resolve([*overrides, "train.gradient_checkpointing=true"]).recipe, tmp_path, has_eval=False)
    assert checkpointed.gradient_checkpointing
    # a GPU preset's mixed precision (the config object itself needs a GPU to accept bf16)
    gpu = training_arguments(resolve([*overrides, "hardware=1x_h100", "method=lora"]).recipe, tmp_path, has_eval=True)
    assert (gpu["bf16"], gpu["fp16"], gpu["use_cpu"]) == (True, False, False)
