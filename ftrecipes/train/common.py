"""What every objective's trainer shares: rows, the model, TRL arguments, saving, the summary.

An objective module (sft, dpo, grpo, pretrain) reads its rows with `load_rows`, gets the model
with `setup_model` (base + `apply_method`), builds its TRL config from `training_arguments`,
passes `standard_callbacks` to its trainer, and ends with `finish`. The keys each helper reads are
listed in its docstring.
"""

from __future__ import annotations

import time
from pathlib import Path

from ftrecipes.data.splits import read_split
from ftrecipes.distributed.sharding import save_arguments
from ftrecipes.distributed.trainer_args import distributed_arguments
from ftrecipes.errors import DataError
from ftrecipes.train.lm_head import loss_head
from ftrecipes.train.packed_attention import packed_attention
from ftrecipes.train.speed import speed_arguments
from ftrecipes.train.stage import ACCEPTS, SUGGESTED_FORMAT


def row_kind(row: dict) -> str:
    """`sft`, `preference`, `prompt` or `text` (the internal row forms of docs/data.md)."""
    if "text" in row:
        return "text"
    if "chosen" in row:
        return "preference"
    messages = row.get("messages") or []
    return "sft" if messages and messages[-1]["role"] == "assistant" else "prompt"


def load_rows(recipe, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """`(train, validation)` rows from `run_dir/data/`, checked against `objective.name`.

    Reads `objective.name` and `data.format` (for the message). Raises `DataError` when the train
    split is empty or holds rows the objective cannot train on (counts only, never content).
    """
    train = read_split(run_dir, "train")
    if not train:
        raise DataError(
            f"no training rows in {Path(run_dir) / 'data' / 'train.jsonl'}",
            hint="run the prepare stage first, or lower data.split.validation and data.split.test",
        )
    validation = read_split(run_dir, "validation")
    name = recipe.objective.name
    accepted = ACCEPTS[name]
    kinds: dict[str, int] = {}
    for row in train + validation:
        kind = row_kind(row)
        kinds[kind] = kinds.get(kind, 0) + 1
    wrong = {k: n for k, n in kinds.items() if k not in accepted}
    if wrong:
        found = ", ".join(f"{n} {k} row{'s' if n != 1 else ''}" for k, n in sorted(wrong.items()))
        raise DataError(
            f"objective.name={name} cannot train on the prepared data: it has {found} "
            f"(data.format={recipe.data.format}); {name} trains on {' or '.join(accepted)} rows",
            hint=f"set data.format to {SUGGESTED_FORMAT[name]} with matching data, or pick another objective",
        )
    return train, validation


def setup_model(recipe, sequences: int):
    """`(model, tokenizer, trainable, total)`: the base (`model.*`) with `method.*` applied.

    `seed` is set first, so adapter initialisation is reproducible. The step count a method may
    need (AdaLoRA's schedule) comes from `train.*` and `sequences`, the training sequences of one
    epoch (rows; GRPO: prompts x `objective.num_generations`; packed pretraining: blocks).
    """
    from transformers import set_seed

    from ftrecipes.model.load import load_model_and_tokenizer
    from ftrecipes.model.methods import apply_method, count_parameters
    from ftrecipes.train.schedule import total_optimizer_steps

    set_seed(recipe.seed)
    model, tokenizer = load_model_and_tokenizer(recipe, shard=True)  # hardware.strategy=fsdp2: this rank's shard
    model = apply_method(model, recipe, total_steps=total_optimizer_steps(recipe, sequences))
    trainable, total = count_parameters(model)
    print(f"train: {recipe.objective.name} with {recipe.method.name} on {recipe.model.name}: "
          f"{trainable:,} of {total:,} parameters train")
    return model, tokenizer, trainable, total


def precision(recipe) -> str:
    """`bf16`, `fp16` or `no`: `hardware.mixed_precision`, always `no` on the CPU."""
    return "no" if recipe.hardware.accelerator == "cpu" else recipe.hardware.mixed_precision


def training_arguments(recipe, run_dir: Path, has_eval: bool) -> dict:
    """Keyword arguments shared by every TRL config (SFTConfig, DPOConfig, GRPOConfig).

    TRL's configs default to bf16 and gradient checkpointing; both are set here from the recipe,
    so a CPU or fp16 preset never inherits them. Keys:

    - schedule: `train.epochs`, `train.max_steps` (overrides epochs), `train.micro_batch_size`,
      `train.gradient_accumulation_steps`, `train.lr_scheduler`, `train.warmup_ratio`,
      `train.weight_decay`, `train.max_grad_norm`; `method.learning_rate`.
    - speed and memory: `train.optimizer`, `train.gradient_checkpointing`, `train.torch_compile`,
      `train.tf32`, `train.liger_kernel` (see `ftrecipes.train.speed`); precision and device:
      `hardware.accelerator`, `hardware.mixed_precision`.
    - validation: every `train.eval_interval` steps, once per epoch when null, never without rows.
    - logging: `logging.log_interval`; trackers, health checks and the progress bar come from
      `ftrecipes.train.callbacks.standard_callbacks`.
    - checkpoints: `train.checkpoint.*`, see `checkpoint_arguments`.
    - reproducibility: `seed`.
    """
    train = recipe.train
    on_cpu = recipe.hardware.accelerator == "cpu"
    mixed = precision(recipe)
    if not has_eval:
        eval_strategy, eval_steps = "no", None
    elif train.eval_interval is None:
        eval_strategy, eval_steps = "epoch", None
    else:
        eval_strategy, eval_steps = "steps", train.eval_interval
    return {**dict(
        **checkpoint_arguments(recipe, run_dir),
        num_train_epochs=train.epochs,
        max_steps=-1 if train.max_steps is None else train.max_steps,
        per_device_train_batch_size=train.micro_batch_size,
        per_device_eval_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=recipe.method.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=float(train.warmup_ratio),  # a float below 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        **speed_arguments(recipe),
        bf16=mixed == "bf16",
        fp16=mixed == "fp16",
        use_cpu=on_cpu,
        dataloader_pin_memory=not on_cpu,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        logging_steps=recipe.logging.log_interval,
        logging_first_step=True,
        disable_tqdm=True,  # ftrecipes.monitor.progress draws the bar (logging.progress_bars)
        include_num_input_tokens_seen="non_padding",  # tokens/s and MFU in metrics.jsonl
        report_to=[],
        seed=recipe.seed,
        data_seed=recipe.seed,
    ), **distributed_arguments(recipe, run_dir)}  # hardware.*: timeout, DeepSpeed (ftrecipes.distributed)


def output_dir(recipe, run_dir: Path) -> Path:
    """`run_dir/adapter/` for adapter methods (`method.name`), else `run_dir/model/`."""
    from ftrecipes.model.methods import ADAPTER_METHODS

    return Path(run_dir) / ("adapter" if recipe.method.name in ADAPTER_METHODS else "model")


def save(trainer, tokenizer, recipe, run_dir: Path) -> Path:
    """Saves safetensors weights and the tokenizer; returns the folder.

    DPO and GRPO (with a KL term) give a PEFT model a frozen `ref` copy of the adapter as their
    reference; only the trained `default` adapter is saved, so `adapter/` reloads as usual.
    """
    out = output_dir(recipe, run_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    ranks = save_arguments(trainer)  # every rank calls: sharded weights are gathered; rank 0 writes
    if hasattr(model, "peft_config"):
        model.save_pretrained(out, safe_serialization=True, selected_adapters=["default"], **ranks)
    else:
        model.save_pretrained(out, safe_serialization=True, **ranks)
    if ranks["is_main_process"]:
        tokenizer.save_pretrained(out)
    return out


def run_and_save(trainer, tokenizer, recipe, run_dir: Path, metrics, sizes: tuple[int, int]) -> dict:
    """Trains, saves, prints one line and returns the summary every objective reports:
    `saved, steps, first_loss, last_loss, train_loss, train_seconds, trainable_params, total_params`."""
    started = time.time()
    result, guard = train_with_checkpoints(trainer, recipe, run_dir, metrics)
    seconds = time.time() - started
    out = save(trainer, tokenizer, recipe, run_dir)
    losses = metrics.losses()
    summary = {
        "objective": recipe.objective.name,
        "saved": str(out),
        "steps": result.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        "trainable_params": sizes[0],
        "total_params": sizes[1],
        "trainable_fraction": sizes[0] / sizes[1] if sizes[1] else 0.0,  # asked for by the methods layer
        "empty_batches": guard.empty_batches if guard else 0,
        "skipped_steps": guard.skipped_steps if guard else 0,
    }
    if losses:
        print(f"train: {result.global_step} steps in {seconds:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"train: saved {out}")
    return summary


def checkpoint_root(run_dir: Path) -> Path:
    """`run_dir/checkpoints/`: committed `checkpoint-<step>` folders (ftrecipes.reliability.checkpoint)."""
    return Path(run_dir) / "checkpoints"


def checkpoint_arguments(recipe, run_dir: Path) -> dict:
    """TrainingArguments for the checkpoint protocol (`ftrecipes.reliability.hf`): HF saves into a
    staging folder under `checkpoint_root` every `train.checkpoint.interval_steps` steps (null:
    each epoch) with the optimizer, scheduler and RNG state; `standard_callbacks` commits them."""
    from ftrecipes.reliability import hf

    return hf.checkpoint_arguments(recipe, checkpoint_root(run_dir))


def train_with_checkpoints(trainer, recipe, run_dir: Path, metrics):
    """`trainer.train()` under the reliability protocol; returns `(TrainOutput, NumericsGuard or None)`.

    Before training: secrets are cleared from the trainer's arguments (they are pickled into every
    checkpoint), the disk must hold `train.checkpoint.keep` + 1 checkpoints (exit 5), and `resume`
    picks the committed checkpoint to continue from (see `ftrecipes.reliability.resume`). The
    numerics guard is attached (`train.nonfinite.*`), and evaluations leave the RNG streams alone
    (`hf.isolate_evaluation_rng`). After: `Preempted` (exit 6) when a SIGTERM,
    SIGUSR1 or SIGUSR2 stopped the run; its checkpoint is committed. Where the distributed strategy turns
    periodic checkpoints off (`save_strategy="no"`, fsdp2), signals keep their default effect. DeepSpeed's
    shards (ZeRO) load without pickle code (`deepspeed_state.safe_loads`).
    """
    import json
    import shutil

    from ftrecipes.reliability import deepspeed_state, hf, preflight
    from ftrecipes.train.numerics import NumericsGuard

    root = checkpoint_root(run_dir)
    hf.scrub_secrets(trainer.args)
    callbacks = trainer.callback_handler.callbacks
    guard = next((c for c in callbacks if isinstance(c, NumericsGuard)), None)
    preemption = next((c for c in callbacks if type(c).__name__ == "Preemption"), None)  # hf.preemption_callback
    if trainer.args.save_strategy == "no" and preemption is not None:
        # no periodic checkpoints (ftrecipes.distributed.trainer_args, fsdp2): a signal
        # cannot be answered with a checkpoint, so it ends the run as usual (not exit 6)
        preemption.restore()
        trainer.remove_callback(preemption)
        preemption = None
    elif trainer.args.save_strategy != "no":
        plan_file = Path(run_dir) / "plan.json"
        plan = json.loads(plan_file.read_text()) if plan_file.is_file() else None
        preflight.check_checkpoint_space(recipe, root, plan if plan and "parameters" in plan else None)
    if guard is not None:
        guard.attach(trainer)
    hf.isolate_evaluation_rng(trainer)
    start = hf.resume_checkpoint(recipe, run_dir, root)
    if trainer.args.process_index == 0:  # a save a kill interrupted: never mixed into the next one
        shutil.rmtree(Path(trainer.args.output_dir), ignore_errors=True)
    try:
        with deepspeed_state.safe_loads():  # both paths below may load DeepSpeed's shards
            finished = finished_checkpoint(trainer, start)
            if finished:
                result = finish_from(trainer, start, finished, metrics)
            else:
                # train.lm_head_loss (ftrecipes.train.lm_head); packed rows (ftrecipes.train.packed_attention);
                # train.cpu_lora_kernels (ftrecipes.train.cpu_lora, which imports torch: not at module level)
                from ftrecipes.train.cpu_lora import cpu_lora_kernels
                from ftrecipes.train.gc_pause import resume_collection

                resume_collection()  # the imports are done: the loop collects as usual (ftrecipes.train.gc_pause)
                with loss_head(recipe, trainer.model), packed_attention(recipe, trainer.model), \
                        cpu_lora_kernels(recipe, trainer.model):
                    result = trainer.train(resume_from_checkpoint=start)
    finally:
        if preemption is not None:
            preemption.restore()
        metrics.finish()  # trackers close even when training raised
    if preemption is not None:
        hf.raise_if_preempted(preemption, trainer.state)
    return result, guard


def finished_checkpoint(trainer, start: str | None):
    """The TrainerState of `start` when it is already at `train.max_steps` (a run stopped between its
    last checkpoint and the final save), else None. Resuming such a checkpoint, transformers would
    run one step past max_steps."""
    from transformers import TrainerState

    if start is None or trainer.args.max_steps <= 0:
        return None
    state = TrainerState.load_from_json(str(Path(start) / "trainer_state.json"))
    return state if state.global_step >= trainer.args.max_steps else None


def finish_from(trainer, start: str, state, metrics):
    """Loads the finished checkpoint's weights instead of training (see `finished_checkpoint`)."""
    from transformers import TrainerControl
    from transformers.trainer_utils import TrainOutput

    folder = Path(start)
    if getattr(trainer, "is_deepspeed_enabled", False):
        load_into_engine(trainer, str(folder))
    else:
        trainer._load_from_checkpoint(str(folder))  # the Trainer's own loader: adapters, shards, safetensors
    trainer.state = state
    metrics.on_train_begin(trainer.args, state, TrainerControl())  # keeps the rows logged up to that step
    print(f"train: {folder.name} is already at train.max_steps={trainer.args.max_steps}; nothing left to train")
    return TrainOutput(state.global_step, None, {})  # no loss: no step ran


def load_into_engine(trainer, folder: str) -> None:
    """ZeRO: only `trainer.train()` builds the DeepSpeed engine that loads the checkpoint's shards and
    that the final save gathers weights from, so it runs up to its first callback and stops there,
    before any step (`on_train_begin` comes after the checkpoint is loaded)."""
    from transformers import TrainerCallback

    class Loaded(Exception):
        pass

    class StopBeforeTheFirstStep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            raise Loaded

    stop = StopBeforeTheFirstStep()
    trainer.add_callback(stop)
    try:
        trainer.train(resume_from_checkpoint=folder)  # inside train_with_checkpoints' safe_loads
    except Loaded:
        pass
    finally:
        trainer.remove_callback(stop)
        trainer.is_in_train = False


def first_and_last(metrics, key: str, window: int = 1) -> tuple[float | None, float | None]:
    """The mean of `key` over the first and the last `window` logged training rows."""
    values = [row[key] for row in metrics.rows if key in row and not any(k.startswith("eval_") for k in row)]
    if not values:
        return None, None
    window = max(1, min(window, len(values) // 2 or 1))
    return sum(values[:window]) / window, sum(values[-window:]) / window
