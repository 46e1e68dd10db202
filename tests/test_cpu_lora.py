"""`train.cpu_lora_kernels` (ftrecipes.train.cpu_lora): PEFT's LoRA layers with the CPU-friendly
matmul orientations give PEFT's values and gradients, the dropout masks keep the right share and
scale, the modules get their classes back, and a real run trains like one with the key off."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from conftest import SMALL_MODEL, private_model_cache
from ftrecipes.config.resolve import resolve
from ftrecipes.train.cpu_lora import FastDropout, cpu_lora_kernels, keep_mask

CPU = SimpleNamespace(train=SimpleNamespace(cpu_lora_kernels=True),
                      hardware=SimpleNamespace(accelerator="cpu", strategy="none"))


class Block(nn.Module):
    """Three Linear layers of different widths, so both thin orientations (in > rank, out > rank) occur."""

    def __init__(self):
        super().__init__()
        self.q, self.up, self.down = nn.Linear(48, 48), nn.Linear(48, 96, bias=False), nn.Linear(96, 48)

    def forward(self, x):
        return self.down(torch.relu(self.up(self.q(x))))


def adapted(dropout: float = 0.0, **config):
    torch.manual_seed(0)
    config = dict(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["q", "up", "down"],
                  init_lora_weights=False, **config)  # non-zero B: every gradient is exercised
    return get_peft_model(Block(), LoraConfig(**config))


def gradients(model, x):
    x = x.detach().requires_grad_()
    model.zero_grad()
    out = model(x)
    (out ** 2).mean().backward()
    return out.detach(), [x.grad] + [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_values_and_gradients_equal_peft_own_layers():
    model = adapted()
    x = torch.randn(3, 40, 48)
    want_out, want = gradients(model, x)
    with cpu_lora_kernels(CPU, model) as swapped:
        assert swapped == 6  # lora_A and lora_B of three layers; lora_dropout is an Identity at p=0
        got_out, got = gradients(model, x)
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-6)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_classes_and_state_dict_are_restored_on_exit_even_after_an_error():
    model = adapted(dropout=0.1)
    layer = model.base_model.model.q
    keys = list(model.state_dict())
    with pytest.raises(RuntimeError), cpu_lora_kernels(CPU, model):
        assert type(layer.lora_dropout["default"]) is FastDropout
        assert list(model.state_dict()) == keys  # checkpoints saved while training: same names
        raise RuntimeError("interrupted")
    assert type(layer.lora_A["default"]) is nn.Linear and type(layer.lora_B["default"]) is nn.Linear
    assert type(layer.lora_dropout["default"]) is nn.Dropout


@pytest.mark.parametrize("why", ["key off", "gpu preset", "zero3", "fsdp2", "dora", "merged"])
def test_it_leaves_layers_it_cannot_speed_up_alone(why):
    recipe = CPU
    model = adapted(dropout=0.1, use_dora=why == "dora")
    if why == "key off":
        recipe = SimpleNamespace(train=SimpleNamespace(cpu_lora_kernels=False), hardware=CPU.hardware)
    if why == "gpu preset":
        recipe = SimpleNamespace(train=CPU.train, hardware=SimpleNamespace(accelerator="cuda", strategy="none"))
    if why in ("zero3", "fsdp2"):  # sharded weights are re-gathered by the engine's own functions
        recipe = SimpleNamespace(train=CPU.train, hardware=SimpleNamespace(accelerator="cpu", strategy=why))
    if why == "merged":
        model.base_model.model.q.merge()
    with cpu_lora_kernels(recipe, model) as swapped:
        assert swapped == (6 if why == "merged" else 0)  # a merged layer is skipped, the other two swap


def test_dropout_keeps_one_minus_p_scales_the_rest_and_is_seeded():
    x = torch.ones(400, 500)
    assert keep_mask(x, 0.05).float().mean().item() == pytest.approx(0.95, abs=0.003)
    assert keep_mask(x, 0.5).float().mean().item() == pytest.approx(0.5, abs=0.003)
    assert keep_mask(x, 0.0).all()
    dropout = copy.deepcopy(nn.Dropout(0.2))
    dropout.__class__ = FastDropout
    x.requires_grad_()
    torch.manual_seed(3)
    out = dropout(x)
    out.sum().backward()
    assert out.unique().tolist() == [0.0, pytest.approx(1.25)]
    assert (out == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    torch.testing.assert_close(x.grad, out.detach())  # d out / d x is the mask times the scale
    torch.manual_seed(3)
    assert torch.equal(dropout(x), out)  # the seeded default generator: reproducible runs
    dropout.eval()
    assert dropout(x) is x


def test_a_real_run_trains_like_peft_own_modules(tmp_path):
    """Two real runs of the tiny model without dropout, key on and off: the same losses, falling."""
    from ftrecipes.data.pipeline import run_prepare
    from ftrecipes.train.stage import run_train

    runs = {}
    with private_model_cache(tmp_path / "cache", SMALL_MODEL):
        for on in (True, False):
            run_dir = tmp_path / f"run-{on}"
            recipe = resolve([*SMALL_MODEL, "logging.progress_bars=false", "train.max_steps=6",
                              "train.micro_batch_size=4", "logging.log_interval=1", "train.warmup_ratio=0",
                              "method.learning_rate=5e-3", "method.lora_dropout=0",
                              f"train.cpu_lora_kernels={str(on).lower()}"]).recipe
            run_prepare(recipe, run_dir)
            run_train(recipe, run_dir)
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            runs[on] = [r["loss"] for r in rows if "loss" in r and not any(k.startswith("eval_") for k in r)]
            if on:  # the saved adapter reloads onto the base, with PEFT's plain classes
                from peft import PeftModel
                from transformers import AutoModelForCausalLM

                from ftrecipes.model.load import resolve_model_path

                base = AutoModelForCausalLM.from_pretrained(resolve_model_path(recipe))
                reloaded = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
                layer = reloaded.base_model.model.model.layers[0].self_attn.q_proj
                assert type(layer.lora_A["default"]) is nn.Linear
                assert layer.lora_B["default"].weight.abs().sum() > 0  # trained, not the zero init
    assert len(runs[True]) == 6 and runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][-1] < runs[True][0]
