"""Method recipes: refused combinations name both keys, advice names the usual range, every
registered method has its YAML and schema fragment, and the plan's parameter counts match peft."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import run_cli
from ftrecipes.config.advice import advice
from ftrecipes.config.resolve import resolve
from ftrecipes.methods import METHODS
from ftrecipes.model.methods import apply_method, count_parameters
from ftrecipes.paths import resource_dir
from ftrecipes.plan import params


@pytest.mark.parametrize("overrides,keys", [
    (["method=adalora", "method.init_r=8", "method.target_r=16"], ["method.target_r", "method.init_r"]),
    (["method=adalora", "method.tinit=0.5", "method.tfinal=0.5"], ["method.tinit", "method.tfinal"]),
    (["method=adalora", "method.tinit=30", "method.tfinal=30", "train.max_steps=50"],
     ["method.tinit", "method.tfinal", "train.max_steps=50"]),
    (["method=p_tuning_v2", "train.gradient_checkpointing=true"], ["method.name=p_tuning_v2",
                                                                   "train.gradient_checkpointing=true"]),
    (["method=prompt_tuning", "objective.packing=true"], ["method.name=prompt_tuning", "objective.packing=true"]),
    (["method=prompt_tuning", "method.init=text"], ["method.init=text", "method.init_text"]),
    (["method=prompt_tuning", "method.init_text=hello"], ["method.init_text", "method.init=random"]),
    (["method=ia3", "method.feedforward_modules=[up_proj]"], ["method.feedforward_modules", "method.target_modules"]),
])
def test_refused_combinations_name_both_keys(overrides, keys):
    result = run_cli(*overrides, "dry_run=true")
    assert result.code == 2, result.out
    for key in keys:
        assert key in result.err, (key, result.err)


def test_qlora_on_the_cpu_validates():
    # bitsandbytes 0.50 runs 4-bit layers on the CPU (tests/test_methods_qlora.py); the load-time
    # check names the hardware where it cannot.
    assert run_cli("method=qlora", "hardware=cpu", "dry_run=true").code == 0


def test_advice_names_key_value_and_usual_range():
    result = run_cli("recipe=quickstart", "dry_run=true")
    assert ("ftrecipes: note: method.learning_rate=0.005 is above the usual range for method 'lora' "
            "(0.0002 to 0.0005)") in result.out
    notes = advice(resolve(["method=full", "method.learning_rate=1e-3"]).recipe)
    assert notes == ["method.learning_rate=0.001 is above the usual range for method 'full' (1e-05 to 5e-05); "
                     "fine if you meant it"]
    assert any(n.startswith("method.r=4 is below the usual range") for n in advice(resolve(["method.r=4"]).recipe))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_yaml_fragment_and_defaults_in_the_usual_range(name):
    assert (resource_dir("recipes") / "method" / f"{name}.yaml").is_file()
    assert (resource_dir("schemas") / "method" / f"{name}.schema.json").is_file()
    index = json.loads((resource_dir("schemas") / "method.schema.json").read_text())
    assert name in index["properties"]["name"]["enum"]
    assert any(b["then"]["$ref"] == f"method/{name}.schema.json" for b in index["allOf"])
    assert advice(resolve([f"method={name}"]).recipe) == []


def test_every_method_yaml_is_registered():
    names = {p.stem for p in (resource_dir("recipes") / "method").glob("*.yaml")}
    assert names == set(METHODS)


ARCH = {"family": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128, "vocab_size": 1024,
        "tie_word_embeddings": True}


@pytest.mark.parametrize("overrides", [
    ["method=full"], ["method=lora"], ["method=lora", "method.target_modules=[q_proj,v_proj]"],
    ["method=dora"], ["method=adalora"], ["method=ia3"], ["method=prompt_tuning"], ["method=p_tuning"],
    ["method=p_tuning", "method.encoder_hidden_size=16"], ["method=p_tuning_v2"],
    ["method=p_tuning_v2", "method.prefix_projection=true", "method.encoder_hidden_size=16"],
    ["method=loha"],  # no rule in plan/params.py: measured on the meta device
], ids=lambda o: " ".join(o))
def test_planned_trainable_parameters_match_peft(overrides):
    recipe = resolve(overrides).recipe
    method = OmegaConf.to_container(recipe.method)
    config = AutoConfig.for_model("llama", **{k: v for k, v in ARCH.items() if k != "family"})
    torch.manual_seed(0)
    model = apply_method(AutoModelForCausalLM.from_config(config), recipe, total_steps=100)
    trainable, _ = count_parameters(model)
    total = params.count(ARCH, method).total
    assert params.trainable(ARCH, method, total) == trainable
    assert params._measured_on_meta(ARCH, method) == [
        (p.shape[0], p[0].numel() if p.dim() > 1 else 1) for p in model.parameters() if p.requires_grad]


def test_prefix_tuning_under_gradient_checkpointing_really_crashes():
    """Why `train.gradient_checkpointing` is refused for p_tuning_v2: transformers drops the
    attention cache inside checkpointed layers, and the cache holds the prefixes. When this test
    fails, upstream fixed it and the rule can go."""
    config = AutoConfig.for_model("llama", **{k: v for k, v in ARCH.items() if k != "family"})
    model = apply_method(AutoModelForCausalLM.from_config(config), resolve(["method=p_tuning_v2"]).recipe)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 1024, (2, 12))
    with pytest.raises(RuntimeError, match="must match the size"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
