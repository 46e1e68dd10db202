"""The plan reproduces the field's published rules of thumb, and PyTorch's real allocations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from ftrecipes.config.resolve import resolve
from ftrecipes.plan import memory, params, suggest, time_cost
from ftrecipes.plan.summary import build_plan

GIB = 1024**3
# LLaMA-65B and Llama-2-13B architecture numbers, from their config.json files.
LLAMA_65B = ["model.architecture.hidden_size=8192", "model.architecture.num_hidden_layers=80",
             "model.architecture.num_attention_heads=64", "model.architecture.num_key_value_heads=64",
             "model.architecture.intermediate_size=22016", "model.architecture.vocab_size=32000",
             "model.architecture.max_position_embeddings=2048"]
LLAMA2_13B = ["model.architecture.hidden_size=5120", "model.architecture.num_hidden_layers=40",
              "model.architecture.num_attention_heads=40", "model.architecture.num_key_value_heads=40",
              "model.architecture.intermediate_size=13824", "model.architecture.vocab_size=32000",
              "model.architecture.max_position_embeddings=4096"]


def _plan(*overrides):
    return build_plan(resolve(list(overrides)).recipe)


def test_qlora_65b_fits_one_48gb_gpu():
    # QLoRA paper (Dettmers et al. 2023), abstract: "finetune a 65B parameter model on a single
    # 48GB GPU"; they train with gradient checkpointing and paged optimizers.
    plan = _plan("model=llama3_1_70b", *LLAMA_65B, "method=qlora", "hardware=1x_a100_80g",
                 "hardware.gpu_memory_gb=48", "data.max_seq_len=512", "train.micro_batch_size=1",
                 "train.gradient_checkpointing=true", "train.optimizer=paged_adamw_32bit")
    assert plan["parameters"]["total"] == pytest.approx(65.2e9, rel=0.01)
    assert plan["fits"] is True, plan["memory_gib_per_device"]
    assert plan["memory_gib_per_device"]["weights"] < 35


def test_qlora_13b_fits_a_24gb_card_at_a_modest_sequence_length():
    # Common practice since the QLoRA paper: 13B QLoRA on one 24 GB consumer GPU (RTX 3090/4090).
    plan = _plan("model=llama3_1_8b", *LLAMA2_13B, "method=qlora", "hardware=1x_rtx4090",
                 "data.max_seq_len=1024", "train.micro_batch_size=1", "train.gradient_checkpointing=true")
    assert plan["fits"] is True, plan["memory_gib_per_device"]


def test_lora_13b_in_bf16_does_not_fit_24gb_and_qlora_is_suggested():
    plan = _plan("model=llama3_1_8b", *LLAMA2_13B, "method=lora", "hardware=1x_rtx4090",
                 "data.max_seq_len=1024", "train.micro_batch_size=1", "train.gradient_checkpointing=true")
    assert plan["fits"] is False
    assert any(s["overrides"] == "method=qlora" for s in plan["suggestions"])


@pytest.mark.parametrize("strategy,fits", [("ddp", False), ("zero1", False), ("zero2", False),
                                           ("zero3", False), ("zero3_offload", True)])
def test_70b_full_fine_tuning_needs_zero3_with_offload_on_8x_a100(strategy, fits):
    # ZeRO paper (Rajbhandari et al. 2020): mixed-precision Adam needs 16 bytes/parameter, so
    # 70B needs ~1.1 TB of model states; 8 x 80 GB only holds them with ZeRO-3 and offload.
    common = ["model=llama3_1_70b", "method=full", "data.max_seq_len=2048", "train.micro_batch_size=1",
              "train.gradient_checkpointing=true"]
    assert _plan(*common, "hardware=1x_a100_80g")["fits"] is False
    assert _plan(*common, "hardware=8x_a100_80g", f"hardware.strategy={strategy}")["fits"] is fits


def test_7b_full_mixed_precision_needs_16_to_18_bytes_per_parameter():
    # ZeRO paper section 3.1 (2 + 2 + 12 bytes) and LLaMA-Factory's hardware table (~120 GB for 7B full).
    recipe = resolve(["model=qwen2_5_7b", "method=full", "hardware=1x_a100_80g"]).recipe
    plain = _plain(recipe)
    counts = params.count(plain["model"]["architecture"], plain["method"])
    grads, optimizer = memory.training_state_bytes(plain, counts)
    per_param = (memory.weight_bytes(plain, counts) + grads + optimizer) / counts.total
    assert 16 <= per_param <= 18


def test_suggestions_are_computed_and_fit():
    plan = _plan("recipe=qwen32b_qlora", "method=lora", "hardware=1x_a100_80g")
    assert plan["fits"] is False
    assert plan["suggestions"]
    for s in plan["suggestions"]:
        assert s["fraction"] < 0.9
        overrides = s["overrides"].split()
        if "method=qlora" in overrides:
            assert _plan("recipe=qwen32b_qlora", "hardware=1x_a100_80g", *overrides)["fits"] is True


def test_time_and_cost_follow_the_formulas():
    recipe = _plain(resolve(["recipe=qwen32b_qlora", "hardware=8x_h100", "train.max_steps=100"]).recipe)
    counts = params.count(recipe["model"]["architecture"], recipe["method"])
    result = time_cost.time_and_cost(recipe, counts)
    tokens = 100 * 1 * 16 * 8 * recipe["data"]["max_seq_len"]
    assert result["tokens"] == pytest.approx(tokens)
    per_token = 4 * counts.total + 6 * counts.trainable + 2 * counts.total + 12 * 64 * 64 * 128 * 2048
    assert result["flops"] == pytest.approx(tokens * per_token)
    hours = result["flops"] / (989e12 * 0.35 * 8) / 3600
    assert result["hours"] == pytest.approx(hours)
    assert result["cost"] == pytest.approx(hours * 8 * 2.5)


def test_api_comparison_reproduces_the_seed_example(team_dir):
    # The seed's example: ~72,000 CNY/month for 1M tokens/day on a frontier API, against under
    # 1,000 CNY self-hosted. Prices come from the recipe; none is built in.
    (team_dir / "hardware" / "cn_gpu.yaml").write_text(
        "name: cn_gpu\naccelerator: cuda\ngpus_per_node: 1\nnodes: 1\ngpu_memory_gb: 24\n"
        "peak_tflops_bf16: 165.2\ninterconnect: pcie\nprice_per_gpu_hour: 1.3\ncurrency: CNY\n"
        "strategy: none\nmixed_precision: bf16\n")
    plan = build_plan(resolve(["hardware=cn_gpu", "+plan.api_comparison.monthly_tokens=30e6",
                               "+plan.api_comparison.price_per_million_tokens=2400",
                               "+plan.api_comparison.currency=CNY"], [str(team_dir)]).recipe)
    api = plan["time_cost"]["api_comparison"]
    assert api["api_monthly"] == pytest.approx(72_000)
    assert api["self_hosted_monthly"] < 1_000
    assert api["ratio"] > 70


def test_plan_command_does_not_import_torch():
    probe = ("import sys, io, contextlib\nfrom ftrecipes.plan.__main__ import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out: code = main(['recipe=qwen32b_qlora'])\n"
             "print(code, 'torch' in sys.modules, 'fits under' in out.getvalue())\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "False", "True"], proc.stderr


def _plain(recipe):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(recipe, resolve=True)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_cpu_plan_matches_pytorch_allocations_for_the_tiny_model(method):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    recipe = _plain(resolve([f"method={method}"]).recipe)
    arch = recipe["model"]["architecture"]
    config = transformers.LlamaConfig(
        hidden_size=arch["hidden_size"], num_hidden_layers=arch["num_hidden_layers"],
        num_attention_heads=arch["num_attention_heads"], num_key_value_heads=arch["num_key_value_heads"],
        head_dim=arch["head_dim"], intermediate_size=arch["intermediate_size"], vocab_size=arch["vocab_size"],
        tie_word_embeddings=arch["tie_word_embeddings"])
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    if method == "lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            r=recipe["method"]["r"], lora_alpha=recipe["method"]["lora_alpha"], target_modules="all-linear"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = torch.randint(0, arch["vocab_size"], (2, 32))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    actual = {
        "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainable),
        "optimizer": sum(t.numel() * t.element_size() for state in optimizer.state.values()
                         for k, t in state.items() if k != "step"),
    }
    planned = build_plan(resolve([f"method={method}"]).recipe)["memory_bytes_per_device"]
    for item, value in actual.items():
        assert planned[item] == pytest.approx(value, rel=0.05), item


def test_local_config_counts_through_the_meta_device(tmp_path):
    transformers = pytest.importorskip("transformers")
    recipe = resolve([]).recipe
    arch = recipe.model.architecture
    transformers.LlamaConfig(
        hidden_size=arch.hidden_size, num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim, intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings).save_pretrained(tmp_path)
    plan = build_plan(resolve(["model.source=local", f"model.path={tmp_path}"]).recipe)
    assert plan["parameters"]["source"] == str(tmp_path / "config.json")
    assert plan["parameters"]["total"] == params.count(arch, recipe.method).total
    assert json.loads(json.dumps(plan))  # plan.json is plain JSON


def test_weight_bytes_by_storage():
    def weights(*overrides):
        return _plan("model=llama3_1_8b", "hardware=1x_a100_80g", *overrides)["memory_bytes_per_device"]["weights"]

    bf16, int8 = weights("method=full"), weights("method=qlora", "method.quant_type=int8", "method.r=1")
    nf4, nf4_plain = weights("method=qlora", "method.r=1"), weights("method=qlora", "method.r=1", "method.double_quant=false")
    assert bf16 == pytest.approx(8.03e9 * 2, rel=0.01)
    assert nf4 < nf4_plain < int8 < bf16
    # double quantization saves 0.5 - 0.127 = 0.373 bit per quantized parameter (QLoRA paper, 3.2)
    assert (nf4_plain - nf4) * 8 / 6.98e9 == pytest.approx(0.373, rel=0.02)


def test_tokens_come_from_the_data_report_after_prepare(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "report.json").write_text(json.dumps(
        {"splits": {"train": 1000, "validation": 100, "test": 100}, "token_lengths": {"mean": 250.0}}))
    recipe = _plain(resolve(["recipe=qwen32b_qlora"]).recipe)
    counts = params.count(recipe["model"]["architecture"], recipe["method"])
    result = time_cost.time_and_cost(recipe, counts, tmp_path)
    assert result["token_source"] == "data report"
    assert result["tokens"] == pytest.approx(1000 * 250.0 * recipe["train"]["epochs"])
