"""LoRA's adapter branch on the CPU, with the matmuls in the orientation MKL is fast at.

PEFT computes each adapted layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`. With a rank
of 8-64 every product in that branch has one thin side, and CPU BLAS is slow for some orientations
of a thin product: on the benchmark's shapes (2,048 tokens, width 64, rank 8, one thread) the
weight gradient of `lora_B` as autograd writes it (`grad_out.T @ h`, an [64, 2048] x [2048, 8]
product) takes 302 us, while the same numbers as `(h.T @ grad_out).T` take 47 us; `x @ A.T`
takes 121 us against 52 us for `(A @ x.T).T`. And `nn.Dropout` draws one Bernoulli sample per
element (about 10 ns each on a CPU without MKL's vector RNG), more than the matmuls themselves.

`cpu_lora_kernels(recipe, model)` (around `train()`, like the packed attention and the loss head)
swaps the class of each plain LoRA `lora_A`/`lora_B` Linear and `lora_dropout` module for the
subclasses below, which compute the same values with the fast orientations, and dropout masks from
16-bit uniform integers (four per 64-bit draw). The parameters, their names, the state dict and
PEFT's own forward are untouched, and the classes are put back on exit, so saving, merging and
evaluation see plain PEFT modules.

The values equal PEFT's to float rounding; the dropout masks come from a different draw than
`torch.nn.Dropout`'s, with the same keep probability (to 1/65,536) and the same `1/(1-p)` scale,
from the same seeded generator. Recipe key: `train.cpu_lora_kernels` (on by default; it acts only
with `hardware.accelerator=cpu`, whole parameters (not ZeRO-3 or FSDP2) and LoRA's plain variant:
no DoRA, no quantized base, no bias on `lora_B`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class _Down(torch.autograd.Function):
    """`x @ W.T` for `W` [rank, in]: computed as `(W @ x.T).T`; gradients `g.T @ x` and `g @ W`."""

    @staticmethod
    def forward(ctx, x, weight):
        flat = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(flat, weight)
        ctx.shape = x.shape
        return weight.mm(flat.t()).t().view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        flat, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        grad_x = grad.mm(weight).view(ctx.shape) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t().mm(flat) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight


class _Up(torch.autograd.Function):
    """`h @ W.T` for `W` [out, rank]; gradients `(h.T @ g).T` and `(W.T @ g.T).T`."""

    @staticmethod
    def forward(ctx, h, weight):
        flat = h.reshape(-1, h.shape[-1])
        ctx.save_for_backward(flat, weight)
        ctx.shape = h.shape
        return flat.mm(weight.t()).view(*h.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        flat, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        grad_h = weight.t().mm(grad.t()).t().view(ctx.shape) if ctx.needs_input_grad[0] else None
        grad_weight = flat.t().mm(grad).t() if ctx.needs_input_grad[1] else None
        return grad_h, grad_weight


class LoraDownLinear(nn.Linear):
    """`lora_A`: the same module, with `_Down` as its forward (no bias: PEFT's `lora_A` has none)."""

    def forward(self, x):
        return _Down.apply(x, self.weight)


class LoraUpLinear(nn.Linear):
    """`lora_B` without a bias: the same module, with `_Up` as its forward."""

    def forward(self, h):
        return _Up.apply(h, self.weight)


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A boolean tensor like `x`, each element True with probability `1 - p` (to 1/65,536): four
    16-bit uniform integers per 64-bit draw of torch's default generator."""
    count = x.numel()
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
    return draws.view(torch.int16)[:count].view(x.shape) >= -32768 + round(p * 65536)


class FastDropout(nn.Dropout):
    """`nn.Dropout` with masks from `keep_mask`: zeroes each element with probability `p` while
    training and scales the rest by `1/(1-p)`; the identity in eval mode."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        # one float multiplier: multiplying by the boolean mask would convert it in each pass
        return x * keep_mask(x, self.p).to(x.dtype).mul_(1 / (1 - self.p))


def plain_lora_layers(model) -> list:
    """PEFT LoRA `Linear` layers this module can speed up: unmerged, no variant (DoRA), and a plain
    `nn.Linear` base (not bitsandbytes). A `lora_B` with a bias keeps its own class."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    found = []
    for module in model.modules():
        if not isinstance(module, LoraLinear) or module.merged or module.lora_variant:
            continue
        if type(module.get_base_layer()) is not nn.Linear:
            continue
        found.append(module)
    return found


# ZeRO-3 and FSDP2 free or shard a weight between forward and backward and re-gather it through
# their own hooks and linear functions; the functions above save the weight for the backward
SHARDED_PARAMETERS = ("zero3", "zero3_offload", "fsdp2")
SWAPS = ((nn.Linear, LoraDownLinear), (nn.Linear, LoraUpLinear), (nn.Dropout, FastDropout))


@contextlib.contextmanager
def cpu_lora_kernels(recipe, model):
    """Inside the block, the plain LoRA layers of `model` run the classes above (see the module
    docstring); on exit every swapped module gets its class back. A no-op unless
    `train.cpu_lora_kernels` is on, `hardware.accelerator=cpu`, the parameters are on the CPU and
    whole (not `hardware.strategy` zero3, zero3_offload or fsdp2)."""
    swapped: list[tuple[nn.Module, type]] = []
    active = (recipe.train.cpu_lora_kernels and recipe.hardware.accelerator == "cpu"
              and recipe.hardware.strategy not in SHARDED_PARAMETERS)
    if active and all(p.device.type == "cpu" for p in model.parameters()):
        for layer in plain_lora_layers(model):
            for name in layer.lora_A:
                for container, (plain, fast) in zip((layer.lora_A, layer.lora_B, layer.lora_dropout), SWAPS):
                    module = container[name]
                    if type(module) is plain and getattr(module, "bias", None) is None:
                        swapped.append((module, plain))
                        module.__class__ = fast
    try:
        yield len(swapped)
    finally:
        for module, plain in swapped:
            module.__class__ = plain
