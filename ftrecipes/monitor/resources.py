"""Throughput, memory and MFU for each logged metrics row.

`Throughput(recipe, model)` is called on every row the Trainer logs and returns the fields to add:

- `tokens_per_s`, `samples_per_s`: non-padding tokens (the Trainer's `num_input_tokens_seen`
  counted as `non_padding`) and samples over the wall time since the previous row;
- `memory_gb`, `memory_peak_gb`, `memory_percent` (peak over the device's capacity) and
  `memory_device`: the accelerator's allocator on a GPU, the process's resident memory over host
  RAM on the CPU;
- `mfu` (GPU only, when `hardware.peak_tflops_bf16` is known): achieved model FLOP/s over the
  preset's peak, with `flops_per_token` from docs/monitoring.md (6 N + 12 L d s, PaLM's appendix B).

Recipe keys: `hardware.accelerator`, `hardware.peak_tflops_bf16`, `hardware.gpus_per_node`,
`hardware.nodes`, `train.micro_batch_size`, `train.gradient_accumulation_steps`.
"""

from __future__ import annotations

import os
import resource
import time

from ftrecipes.plan.memory import world_size


def flops_per_token(non_embedding_params: int, layers: int, attention_width: int, seq_len: float) -> float:
    """Training FLOPs per token: 6 N for the matmuls (forward 2 N, backward 4 N) plus 12 L d s for
    the attention scores and their use (PaLM, appendix B), with s the mean sequence length."""
    return 6.0 * non_embedding_params + 12.0 * layers * attention_width * seq_len


def non_embedding_parameters(model) -> int:
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return total - (embeddings.weight.numel() if embeddings is not None else 0)


def memory_snapshot(accelerator: str) -> dict:
    """Current and peak memory in GB with the peak's share of the device (host RAM on the CPU)."""
    if accelerator == "cuda":
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            current, peak = torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
            return _memory(current, peak, total, "cuda")
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm", encoding="ascii") as f:
        current = int(f.read().split()[1]) * page
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return _memory(current, max(peak, current), page * os.sysconf("SC_PHYS_PAGES"), "cpu")


def _memory(current: int, peak: int, total: int, device: str) -> dict:
    return {"memory_gb": round(current / 1e9, 3), "memory_peak_gb": round(peak / 1e9, 3),
            "memory_percent": round(100.0 * peak / total, 2) if total else None, "memory_device": device}


class Throughput:
    """Adds throughput, memory and (on a GPU) MFU fields to each logged row."""

    def __init__(self, recipe, model):
        hw = recipe.hardware
        self.accelerator = hw.accelerator
        self.devices = world_size(hw)  # GPUs, or CPU processes (`hardware.cpu_processes`) x nodes
        self.peak_flops = (hw.peak_tflops_bf16 or 0) * 1e12 * self.devices
        self.samples_per_step = recipe.train.micro_batch_size * recipe.train.gradient_accumulation_steps * self.devices
        config = getattr(model, "config", None)
        self.layers = getattr(config, "num_hidden_layers", 0) or 0
        heads, head_dim = getattr(config, "num_attention_heads", 0) or 0, getattr(config, "head_dim", None)
        self.attention_width = heads * (head_dim or (getattr(config, "hidden_size", 0) // max(heads, 1)))
        self.non_embedding = non_embedding_parameters(model)
        self.start()

    def start(self) -> None:
        self.last = (time.perf_counter(), 0, 0)

    def __call__(self, state, row: dict) -> dict:
        if "loss" not in row:  # evaluation rows: memory only
            return memory_snapshot(self.accelerator)
        now, tokens, step = time.perf_counter(), int(getattr(state, "num_input_tokens_seen", 0) or 0), state.global_step
        then, tokens_before, step_before = self.last
        self.last = (now, tokens, step)
        seconds = now - then
        out = memory_snapshot(self.accelerator)
        if seconds <= 0 or step <= step_before:
            return out
        samples = (step - step_before) * self.samples_per_step
        out["samples_per_s"] = round(samples / seconds, 3)
        if tokens > tokens_before:
            tok_s = (tokens - tokens_before) / seconds
            out["tokens_per_s"] = round(tok_s, 1)
            out["tokens_seen"] = tokens
            if self.accelerator == "cuda" and self.peak_flops:
                per_token = flops_per_token(self.non_embedding, self.layers, self.attention_width,
                                            (tokens - tokens_before) / max(samples, 1))
                out["mfu"] = round(per_token * tok_s / self.peak_flops, 4)
        return out
