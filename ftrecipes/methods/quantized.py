"""Loading a base through bitsandbytes for `qlora`, and proving that it really is quantized.

Recipe keys: `method.quant_type` (`nf4` or `fp4`: 4-bit QLoRA; `int8`: LLM.int8 8-bit),
`method.double_quant` (quantize the 4-bit block constants too), `method.compute_dtype` (dtype the
quantized layers compute in), `hardware.accelerator` and `hardware.strategy` (where the layers
live; sharded strategies store the 4-bit weights in the compute dtype so they can be sharded).

What runs where (bitsandbytes 0.50.2, measured by tests/test_methods_qlora.py): CUDA GPUs, and
CPUs through bitsandbytes' CPU backend (nf4, fp4 and int8, every compute dtype). After loading,
`finish_load` checks that the linear layers are bitsandbytes layers whose weights are stored at
4 (or 8) bits each, and runs one forward through a quantized layer, so an unsupported device fails
here with the hardware named instead of training silently in full precision or crashing later.
"""

from __future__ import annotations

import os
import platform

from ftrecipes.errors import EnvironmentProblem

INSTALL_HINT = "pip install 'ftrecipes[qlora]' (it installs bitsandbytes)"
SHARDED = {"fsdp2", "zero3", "zero3_offload"}


def require_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise EnvironmentProblem("method 'qlora' needs bitsandbytes, which is not installed",
                                 hint=INSTALL_HINT) from None
    return bitsandbytes


def hardware_description(recipe) -> str:
    """`hardware=NAME (what torch sees)`, for messages about where bitsandbytes runs."""
    import torch

    hw = recipe.hardware
    if hw.accelerator == "cuda":
        seen = (f"CUDA device {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                else f"torch {torch.__version__} sees no CUDA device")
    else:
        seen = f"{platform.machine()} CPU {_cpu_name()!r}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return f"hardware={hw.name} ({seen})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def quantization_config(recipe):
    """The BitsAndBytesConfig for `recipe.method`."""
    import torch
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    method = recipe.method
    if method.quant_type == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = getattr(torch, method.compute_dtype)
    extra = {}
    if recipe.hardware.strategy in SHARDED:
        # FSDP and ZeRO-3 shard flat tensors of one dtype: store the packed 4-bit weights in it.
        extra["bnb_4bit_quant_storage"] = compute
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method.quant_type,
                              bnb_4bit_use_double_quant=method.double_quant,
                              bnb_4bit_compute_dtype=compute, **extra)


def device_map(recipe) -> dict:
    """bitsandbytes quantizes while loading, so the base is placed on its device at load time."""
    import torch

    if recipe.hardware.accelerator == "cpu":
        return {"": "cpu"}
    if not torch.cuda.is_available():
        raise EnvironmentProblem(
            f"method 'qlora' loads its base in 4-bit on the GPU, but {hardware_description(recipe)}",
            hint="run on a machine with an NVIDIA GPU, or use hardware=cpu (bitsandbytes runs 4-bit "
            "layers on the CPU too, slowly)")
    return {"": int(os.environ.get("LOCAL_RANK", 0))}


def quantized_layers(model) -> list:
    return [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]


def bits_per_weight(layer) -> float:
    """Storage bits per weight of a bitsandbytes layer, from the bytes its weight occupies."""
    weight = layer.weight
    return weight.numel() * weight.element_size() * 8 / (layer.in_features * layer.out_features)


def require_quantized(model, method) -> None:
    if not quantized_layers(model):
        raise EnvironmentProblem(
            f"method '{method.name}' needs a base loaded through bitsandbytes, and this one has no "
            "quantized layers", hint="load the base with ftrecipes.model.load.load_model_and_tokenizer")


def disable_cpu_repack(model) -> None:
    """Stops bitsandbytes from repacking 4-bit weights for its AVX512-BF16 CPU kernel.

    bitsandbytes 0.50.2 repacks a Linear4bit's weight in place on the first no-grad forward in
    eval mode (an evaluation, a generate call) when the CPU has AVX512-BF16; training forwards
    after that no longer reach the LoRA tensors of most layers (reported on an AVX512-BF16 machine:
    4 of 12 LoRA tensors got gradients). The flag is public on each layer, so it is switched off
    before any forward. CPUs without AVX512-BF16 never repack; the flag is harmless there.
    """
    for layer in quantized_layers(model):
        if hasattr(layer, "support_avx512bf16_for_cpu"):
            layer.support_avx512bf16_for_cpu = False


def finish_load(model, recipe) -> dict:
    """Checks that the base really is quantized on this device; returns what was found.

    Raises `EnvironmentProblem`, naming the hardware, when bitsandbytes left the layers in full
    precision or cannot run a quantized layer here.
    """
    import torch

    disable_cpu_repack(model)
    layers = quantized_layers(model)
    expected = 8 if recipe.method.quant_type == "int8" else 4
    where = hardware_description(recipe)
    if not layers:
        raise EnvironmentProblem(f"bitsandbytes left every linear layer of the base in full precision on {where}",
                                 hint="use a device bitsandbytes supports (an NVIDIA GPU, an x86-64 CPU), or method=lora")
    bits = max(bits_per_weight(layer) for layer in layers)
    if bits > expected:
        raise EnvironmentProblem(f"bitsandbytes stores {bits:g} bits per weight on {where}, not {expected}",
                                 hint="use a device bitsandbytes supports, or method=lora")
    layer = layers[0]
    try:
        with torch.no_grad():
            layer(torch.zeros(1, layer.in_features, device=layer.weight.device, dtype=model.dtype))
    except Exception as exc:  # bitsandbytes raises several types for a device it has no kernel for
        raise EnvironmentProblem(
            f"bitsandbytes cannot run a {expected}-bit layer on {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint="use a device bitsandbytes supports (an NVIDIA GPU, an x86-64 CPU), or method=lora") from None
    kind = f"{expected}-bit {recipe.method.quant_type}" if expected == 4 else "8-bit LLM.int8"
    print(f"load: {len(layers)} linear layers of the base are {kind} ({bits:g} bits per weight stored) on {where}")
    return {"quantized_layers": len(layers), "bits_per_weight": bits}
