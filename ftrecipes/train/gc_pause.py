"""Keeps Python's cyclic garbage collector out of a run's start-up.

Importing torch, transformers, PEFT, TRL and datasets creates about 700,000 objects that live as
long as the process. While they are created the collector runs again and again, each full pass
walking all of them, and Trainer's `accelerator.free_memory()` calls `gc.collect()` once more
just before the first step: together 0.4 to 1.0 s of the start on a 2-core machine
(docs/performance.md).

`pause_collection(recipe)` turns the collector off when a run's own process (the
`lean_imports.OWNS_PROCESS` rule) goes straight to training (`train` is its first stage here).
`resume_collection()` runs just before `trainer.train()`: it moves every object alive at that
point into the permanent generation (`gc.freeze()`, so the training loop's passes never walk the
imported modules) and turns the collector back on. `end_of_stage()` runs after every stage: it
turns the collector on if training never started, and returns the frozen objects to the
collector (`gc.unfreeze()`), so a trainer and model the stage dropped are freed as usual before
the next stage loads its own. Reference counting frees everything else meanwhile; only objects in
reference cycles wait. Off with `train.lean_imports=false`.
"""

from __future__ import annotations

import gc

_paused = False
_frozen = False


def pause_collection(recipe, first_stage: str | None) -> bool:
    """Turns the collector off (see the module docstring); True when it did."""
    global _paused
    from ftrecipes.train import lean_imports

    if _paused or not lean_imports.acts_on(recipe):
        return False
    if first_stage != "train" or not gc.isenabled():
        return False  # a caller that turned it off keeps its choice
    gc.disable()
    _paused = True
    return True


def resume_collection() -> bool:
    """Freezes what is alive and turns the collector back on, if `pause_collection` paused it."""
    global _paused, _frozen
    if not _paused:
        return False
    gc.freeze()
    gc.enable()
    _paused, _frozen = False, True
    return True


def end_of_stage() -> None:
    """The collector on and nothing frozen, whatever happened in the stage."""
    global _paused, _frozen
    if _paused:
        gc.enable()
        _paused = False
    if _frozen:
        gc.unfreeze()
        _frozen = False
