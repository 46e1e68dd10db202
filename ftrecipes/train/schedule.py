"""The optimizer-step count a run will take, known before the Trainer exists.

Methods that need it at construction time (AdaLoRA's `total_step`) and validation rules use
`total_optimizer_steps`. It follows the HF Trainer's arithmetic: batches per epoch on each rank
(`ceil(rows / (micro_batch_size * world_size))`), then `floor` by gradient accumulation (at least
one step per epoch), times `train.epochs`, or `train.max_steps` when set.
"""

from __future__ import annotations

import math


def total_optimizer_steps(recipe, train_rows: int, world_size: int = 1) -> int:
    train = recipe.train
    if train.max_steps is not None and train.max_steps > 0:
        return int(train.max_steps)
    batches = math.ceil(train_rows / (train.micro_batch_size * max(world_size, 1)))
    per_epoch = max(batches // train.gradient_accumulation_steps, 1)
    return int(math.ceil(per_epoch * train.epochs))
