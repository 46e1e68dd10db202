"""How the loss reads the LM head: TRL's chunked kernel, or dense logits at the label positions.

TRL's trainers (SFT, DPO, GRPO, ...) score tokens through a "fused LM head"
(`trl.trainer.utils.add_fused_lm_head`) that never materialises the `[tokens, vocab]` logits. On
CUDA/XPU it runs Triton kernels on the positions that have a label. Everywhere else (the CPU) it
runs the same online-softmax algorithm as torch ops on small tiles in a Python loop, and scores
every position, prompt and padding included. With a small vocabulary that loop costs more than
the model: one LoRA step of the benchmark's tiny Llama (4 rows of alpaca, vocab 1024) took 170 ms
through it against 104 ms with plain logits (docs/performance.md).

`train.lm_head_loss` picks the path for the run (`loss_head(recipe, model)` around `train()`):

- `chunked`: TRL's kernel as it is. Memory stays at one tile whatever the vocabulary.
- `dense`: `hidden[label positions] @ W.T` in one matmul, then torch's `log_softmax`. The same
  outputs TRL's kernel returns (log-probs, entropy, top-1, ...), with autograd's gradients. It
  holds the logits of the labelled tokens of one micro-batch, about 3 x tokens x vocab x 4 bytes.
- `auto` (default): `dense` where TRL has no Triton kernel for the device and that estimate for a
  full micro-batch (`train.micro_batch_size` x `data.max_seq_len`) stays under `DENSE_BUDGET`;
  `chunked` otherwise (CUDA, and large vocabularies on the CPU).

The swap replaces two names in `trl.trainer.utils` for the duration of `train()` and restores
them afterwards; if a TRL release renames them, the run stays on TRL's own kernel and says so.
"""

from __future__ import annotations

import contextlib
import warnings

DENSE_BUDGET = 1 << 30  # bytes of logits and their softmax for one micro-batch (see `choose`)
OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def dense_log_probs(hidden, weight, bias, targets, temperature, chunk_size=None,
                    final_logit_softcapping=None, logit_scale=1.0, outputs=OUTPUTS):
    """TRL's `ChunkedLogProbFunction.apply` contract, computed densely: `(log_probs, entropy,
    log_sum_sq_probs, mean_logits, is_top1)` for `hidden [N, H]` and `targets [N]`, with None for
    outputs not asked for. Logits are `(h @ W.T + b) * logit_scale`, soft-capped, then divided by
    `temperature`, in float32, as in TRL's `_torch_transform`. `chunk_size` is accepted and unused."""
    import torch
    import torch.nn.functional as F

    z = F.linear(hidden, weight, bias).float()
    if logit_scale != 1.0:  # a full pass over [N, vocab] each way: skipped when it is the identity
        z = z * logit_scale
    if final_logit_softcapping is not None:
        z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
    if temperature != 1.0:
        z = z / temperature
    # log_softmax, not logsumexp or exp of raw logits: torch's CPU exp takes a slow path for every
    # input that underflows (z - max below about -87), 15-20x slower on a trained model's logits,
    # while the log_softmax kernel does not (docs/performance.md)
    log_p = torch.log_softmax(z, dim=-1)
    log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = log_sum_sq = mean_logits = is_top1 = None
    probs = None
    if {"entropy", "log_sum_sq_probs"} & set(outputs):
        # exp of log-probs clamped above the underflow (the slow path): an entry below e^-87 weighs
        # nothing next to the others, and this takes half the time of a second softmax kernel
        probs = log_p.clamp(min=-87.0).exp()
    if "entropy" in outputs:
        entropy = -(probs * log_p).sum(-1)
    with torch.no_grad():  # TRL marks these three non-differentiable
        if "log_sum_sq_probs" in outputs:
            log_sum_sq = torch.log(probs.square().sum(-1))
        if "mean_logits" in outputs:
            mean_logits = z.mean(-1)
        if "is_top1" in outputs:  # argmax takes the first maximum, as TRL's kernel does
            is_top1 = z.argmax(-1) == targets if z.shape[0] else torch.zeros_like(targets, dtype=torch.bool)
    return log_probs, entropy, log_sum_sq, mean_logits, is_top1


class DenseLogProb:
    """Stands in for TRL's `ChunkedLogProbFunction` (only `.apply` is called)."""

    apply = staticmethod(dense_log_probs)


def _label_positions_only(device) -> bool:
    """Stands in for TRL's `_use_triton` where it only decides whether to score label positions
    only ("compact"); TRL scores every position off Triton to keep tile shapes fixed."""
    return True


def vocabulary(model) -> int:
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else 0


def choose(recipe, model) -> str:
    """`chunked` or `dense` for `train.lm_head_loss` (see the module docstring)."""
    setting = recipe.train.get("lm_head_loss", "auto")
    if setting != "auto":
        return setting
    if recipe.hardware.accelerator in ("cuda", "xpu"):
        return "chunked"
    tokens = recipe.train.micro_batch_size * recipe.data.max_seq_len
    return "dense" if 3 * 4 * tokens * vocabulary(model) <= DENSE_BUDGET else "chunked"


@contextlib.contextmanager
def loss_head(recipe, model):
    """Within the block, TRL's fused LM head uses the path `choose` picks; yields that name."""
    mode = choose(recipe, model)
    if mode != "dense":
        yield mode
        return
    from trl.trainer import utils as trl_utils

    names = ("_ChunkedLogProbFunction", "_use_triton")
    if not all(hasattr(trl_utils, name) for name in names):
        warnings.warn("train.lm_head_loss=dense: this TRL release has no _ChunkedLogProbFunction/_use_triton "
                      "in trl.trainer.utils; training with TRL's own chunked kernel", stacklevel=2)
        yield "chunked"
        return
    saved = {name: getattr(trl_utils, name) for name in names}
    trl_utils._ChunkedLogProbFunction, trl_utils._use_triton = DenseLogProb, _label_positions_only
    try:
        yield mode
    finally:
        for name, value in saved.items():
            setattr(trl_utils, name, value)
