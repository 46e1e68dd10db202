"""`train.lm_head_loss` (ftrecipes.train.lm_head): the dense path returns what TRL's chunked kernel
returns, gradients included, and the swap into TRL lasts only as long as the block.

The comparisons run TRL's real kernel (its torch tile path on the CPU) on the same inputs.
"""

from __future__ import annotations

import pytest
import torch

from ftrecipes.config.resolve import resolve
from ftrecipes.train import lm_head

OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def inputs(tokens=37, hidden=16, vocab=300, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    b = torch.randn(vocab, generator=g, requires_grad=True) if bias else None
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    return h, w, b, targets


@pytest.mark.parametrize("softcap,scale,temperature,bias", [
    (None, 1.0, 1.0, False), (None, 1.0, 0.7, True), (30.0, 0.5, 1.3, True),
])
def test_dense_matches_trls_chunked_kernel_values_and_gradients(softcap, scale, temperature, bias):
    from trl.kernels import ChunkedLogProbFunction

    got, want = {}, {}
    for name, fn, store in (("dense", lm_head.dense_log_probs, got), ("chunked", ChunkedLogProbFunction.apply, want)):
        h, w, b, targets = inputs(bias=bias)
        out = fn(h, w, b, targets, temperature, 64, softcap, scale, OUTPUTS)
        (out[0].sum() + 0.3 * out[1].sum()).backward()  # a log-prob and an entropy term
        store.update(zip(("log_probs", "entropy", "log_sum_sq", "mean_logits", "is_top1"), out))
        store.update(grad_h=h.grad, grad_w=w.grad, grad_b=b.grad if b is not None else None)
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        elif value.dtype == torch.bool:
            assert torch.equal(got[key], value), key
        else:
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_only_the_outputs_asked_for_are_computed():
    h, w, b, targets = inputs()
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = lm_head.dense_log_probs(h, w, b, targets, 1.0, 64)
    assert all(x is not None for x in (entropy, log_sum_sq, mean_logits, is_top1))
    only = lm_head.dense_log_probs(h, w, b, targets, 1.0, 64, outputs=())
    assert only[1:] == (None, None, None, None)
    torch.testing.assert_close(only[0], log_probs)
    empty = lm_head.dense_log_probs(h[:0], w, b, targets[:0], 1.0, 64)  # a micro-batch without labels
    assert empty[0].shape == (0,) and empty[4].shape == (0,)


class Head:
    def __init__(self, vocab):
        self.weight = torch.empty(vocab, 4)


class Model:
    def __init__(self, vocab):
        self.head = Head(vocab)

    def get_output_embeddings(self):
        return self.head


def test_auto_is_dense_on_the_cpu_for_small_vocabularies_and_chunked_on_cuda_or_large_ones():
    recipe = resolve(["train.micro_batch_size=4", "data.max_seq_len=512"]).recipe
    assert recipe.train.lm_head_loss == "auto"
    assert lm_head.choose(recipe, Model(1024)) == "dense"
    assert lm_head.choose(recipe, Model(151_936)) == "chunked"  # a Qwen vocabulary: 3.7 GB of logits
    assert lm_head.choose(resolve(["hardware=1x_h100"]).recipe, Model(1024)) == "chunked"
    assert lm_head.choose(resolve(["train.lm_head_loss=dense", "hardware=1x_h100"]).recipe, Model(151_936)) == "dense"
    assert lm_head.choose(resolve(["train.lm_head_loss=chunked"]).recipe, Model(1024)) == "chunked"


def test_the_swap_into_trl_is_undone_after_the_block_even_on_error():
    from trl.trainer import utils as trl_utils

    before = (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton)
    recipe = resolve(["train.lm_head_loss=dense"]).recipe
    with pytest.raises(RuntimeError):
        with lm_head.loss_head(recipe, Model(1024)) as mode:
            assert mode == "dense"
            assert trl_utils._ChunkedLogProbFunction is lm_head.DenseLogProb
            raise RuntimeError("training failed")
    assert (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton) == before
    with lm_head.loss_head(resolve(["train.lm_head_loss=chunked"]).recipe, Model(1024)) as mode:
        assert mode == "chunked" and trl_utils._ChunkedLogProbFunction is before[0]
