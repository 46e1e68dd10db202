"""QLoRA's base really is quantized, and every LoRA tensor keeps learning after eval and generate.

The base is a micro tiny model built locally and loaded back through `from_pretrained` with
bitsandbytes, exactly as the train stage loads it. bitsandbytes runs here on the CPU; the same
checks hold on a GPU. Skipped, with the reason, where bitsandbytes is not installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ftrecipes.config.resolve import resolve
from ftrecipes.errors import EnvironmentProblem, RecipeError
from ftrecipes.methods import quantized
from ftrecipes.model.load import load_model_and_tokenizer
from ftrecipes.model.methods import apply_method

bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install 'ftrecipes[qlora]'")

MICRO = [
    "model.architecture.hidden_size=64",
    "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2",
    "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32",
    "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=3",
    "model.build.pretrain_batch_size=4",
    "method=qlora",
    "method.r=4",
    "hardware=cpu",
]
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os

    saved = os.environ.get("FTRECIPES_CACHE")
    os.environ["FTRECIPES_CACHE"] = str(tmp_path_factory.mktemp("qlora") / "cache")
    yield
    if saved is None:
        os.environ.pop("FTRECIPES_CACHE", None)
    else:
        os.environ["FTRECIPES_CACHE"] = saved


@pytest.mark.parametrize("quant_type,bits,layer_type", [("nf4", 4, "Linear4bit"), ("fp4", 4, "Linear4bit"),
                                                        ("int8", 8, "Linear8bitLt")])
def test_base_linear_layers_are_really_quantized(cache, quant_type, bits, layer_type):
    recipe = resolve([*MICRO, f"method.quant_type={quant_type}"]).recipe
    model, _ = load_model_and_tokenizer(recipe)
    full, _ = load_model_and_tokenizer(recipe, quantize=False)
    layers = {name: m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in LINEAR}
    assert len(layers) == 7 * 2 and {type(m).__name__ for m in layers.values()} == {layer_type}
    # Storage, not just the class name: 4 (or 8) bits per weight in memory.
    stored = sum(m.weight.numel() * m.weight.element_size() for m in layers.values())
    weights = sum(m.in_features * m.out_features for m in layers.values())
    assert stored * 8 == bits * weights
    assert all(quantized.bits_per_weight(m) == bits for m in layers.values())
    # The quantized layer computes close to, but not exactly, the full-precision one.
    name, layer = next(iter(layers.items()))
    reference = full.get_submodule(name)
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        got, want = layer(x).float(), reference(x)
    error = (got - want).norm() / want.norm()
    assert 0 < error < 0.25, error
    if bits == 4:
        assert all(m.support_avx512bf16_for_cpu is False for m in layers.values())


def test_every_lora_tensor_gets_a_gradient_after_eval_and_generate(cache):
    recipe = resolve(MICRO).recipe
    model, tokenizer = load_model_and_tokenizer(recipe)
    model = apply_method(model, recipe)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    ids = tokenizer(["Invoice from Duff over 875 pounds, paid."] * 2, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW(lora.values(), lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()  # lora_B starts at zero, so lora_A gets no gradient before one step
    optimizer.zero_grad()

    model.eval()  # what evaluation and generation do between training steps
    with torch.no_grad():
        model(input_ids=ids)
    model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    without = [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without, f"{len(without)} of {len(lora)} LoRA tensors got no gradient: {without[:4]}"


def test_full_fine_tuning_refuses_a_quantized_base(cache):
    model, _ = load_model_and_tokenizer(resolve(MICRO).recipe)
    with pytest.raises(RecipeError, match="method.name=full cannot train the quantized model at model.path"):
        apply_method(model, resolve([o for o in MICRO if not o.startswith("method")] + ["method=full"]).recipe)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so the GPU preset can load")
def test_gpu_preset_on_a_machine_without_cuda_names_the_hardware(cache):
    recipe = resolve([*MICRO, "hardware=1x_rtx4090"]).recipe
    with pytest.raises(EnvironmentProblem) as caught:
        load_model_and_tokenizer(recipe)
    assert "hardware=1x_rtx4090" in caught.value.message and "no CUDA device" in caught.value.message
    assert "hardware=cpu" in caught.value.hint


def test_missing_bitsandbytes_says_how_to_install_it():
    # A None entry in sys.modules makes `import bitsandbytes` fail, as on a machine without it.
    code = ("import sys; sys.modules['bitsandbytes'] = None\n"
            "from ftrecipes.methods.quantized import require_bitsandbytes\n"
            "from ftrecipes.errors import EnvironmentProblem\n"
            "try:\n    require_bitsandbytes()\nexcept EnvironmentProblem as e:\n    print(e.render())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "method 'qlora' needs bitsandbytes, which is not installed" in out
    assert "pip install 'ftrecipes[qlora]'" in out
