"""The checkpoint commit protocol and auto-resume, on synthetic checkpoints shaped like HF Trainer's.

The torn-checkpoint matrix: for every file of the newest checkpoint (the manifest included),
deleting, truncating or flipping one byte makes resume fall back to the previous checkpoint with
a message naming the file, or, when there is no previous one, stop with an error naming the file.
Never a silent fresh start.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from ftrecipes.errors import ExitCode, OutOfResources, RecipeError, report_errors
from ftrecipes.reliability import checkpoint as ck
from ftrecipes.reliability.resume import recipe_fingerprint, resume_diff, select_for_resume

FINGERPRINT = {"method.name": "lora", "method.learning_rate": 2e-4, "data.max_seq_len": 512,
               "world_size": 1, "data_hash": "abc"}


def write_hf_files(folder: Path, step: int, *, world_size: int = 1, adapter: bool = True) -> Path:
    """The files HF Trainer writes for a LoRA (or full) checkpoint, with real formats."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    torch.manual_seed(step)
    weights = {"base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(8, 64),
               "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(64, 8)}
    save_file(weights, str(folder / ("adapter_model.safetensors" if adapter else "model.safetensors")))
    if adapter:
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    torch.save({"state": {0: {"step": torch.tensor(float(step)), "exp_avg": torch.randn(8, 64)}},
                "param_groups": [{"lr": 2e-4, "params": [0]}]}, folder / "optimizer.pt")
    torch.save({"last_epoch": step, "_step_count": step + 1}, folder / "scheduler.pt")
    for name in ck.rng_files(world_size):
        torch.save({"cpu": torch.random.get_rng_state(), "python": step}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 10}))
    (folder / "training_args.bin").write_bytes(pickle.dumps({"learning_rate": 2e-4, "hub_token": None}))
    return folder


def save(root: Path, step: int, fingerprint=FINGERPRINT, **kwargs) -> Path:
    tmp = write_hf_files(ck.temp_dir_for(root, step), step, **kwargs)
    return ck.commit(tmp, root / f"checkpoint-{step}", step, fingerprint,
                     world_size=kwargs.get("world_size", 1))


def files_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def tear(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def test_commit_writes_a_manifest_last_and_renames(tmp_path):
    final = save(tmp_path, 10)
    assert final == tmp_path / "checkpoint-10" and not list(tmp_path.glob(".tmp-*"))
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["step"] == 10 and manifest["recipe"] == FINGERPRINT
    assert set(manifest["files"]) == set(files_of(final)) - {"manifest.json"}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    assert ck.verify(final) == [] and ck.committed_checkpoints(tmp_path) == [final]


def test_an_uncommitted_folder_never_counts(tmp_path):
    write_hf_files(ck.temp_dir_for(tmp_path, 5), 5)  # a crash before commit
    assert ck.committed_checkpoints(tmp_path) == []
    assert select_for_resume(tmp_path, FINGERPRINT, say=lambda _: None) is None  # nothing committed: fresh


@pytest.mark.parametrize("world_size,missing", [(1, "optimizer.pt"), (1, "scheduler.pt"), (1, "rng_state.pth"),
                                                (1, "trainer_state.json"), (2, "rng_state_1.pth"),
                                                (1, "adapter_model.safetensors")])
def test_commit_refuses_a_checkpoint_without_what_resume_needs(tmp_path, world_size, missing):
    tmp = write_hf_files(ck.temp_dir_for(tmp_path, 3), 3, world_size=world_size)
    (tmp / missing).unlink()
    with pytest.raises(ck.CheckpointError) as caught:
        ck.commit(tmp, tmp_path / "checkpoint-3", 3, FINGERPRINT, world_size=world_size)
    assert (missing if "safetensors" not in missing else "no weights") in caught.value.message
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert not (tmp_path / "checkpoint-3").exists()


def test_pickled_weights_are_refused(tmp_path):
    tmp = write_hf_files(ck.temp_dir_for(tmp_path, 3), 3)
    (tmp / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ck.CheckpointError, match="adapter_model.bin: weights must be safetensors"):
        ck.commit(tmp, tmp_path / "checkpoint-3", 3, FINGERPRINT)


def test_torn_checkpoint_matrix_falls_back_to_the_previous_one(tmp_path):
    pristine = tmp_path / "pristine"
    save(pristine, 10)
    save(pristine, 20)
    names = files_of(pristine / "checkpoint-20")
    assert {"manifest.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            "adapter_model.safetensors", "training_args.bin"} <= set(names)
    cases = 0
    for name in names:
        for how in ("delete", "truncate", "flip"):
            root = tmp_path / f"{how}-{name}"
            subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
            tear(root / "checkpoint-20" / name, how)
            said = []
            chosen = select_for_resume(root, FINGERPRINT, say=said.append)
            assert chosen == root / "checkpoint-10", (name, how)
            assert any(name in line and "damaged" in line for line in said), (name, how, said)
            assert any("older checkpoint" in line for line in said)
            cases += 1
    assert cases == 3 * len(names)


def test_torn_only_checkpoint_is_an_error_naming_the_file(tmp_path, capsys):
    pristine = tmp_path / "pristine"
    save(pristine, 10)
    for name in files_of(pristine / "checkpoint-10"):
        for how in ("delete", "truncate", "flip"):
            root = tmp_path / f"{how}-{name}"
            subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
            tear(root / "checkpoint-10" / name, how)
            code = report_errors(select_for_resume, root, FINGERPRINT)
            err = capsys.readouterr().err
            assert code == ExitCode.ENVIRONMENT, (name, how)
            assert "no checkpoint under" in err and name in err and "Traceback" not in err, err
            assert "starting fresh would discard them" in err


def test_an_added_file_is_noticed(tmp_path):
    save(tmp_path, 10)
    newest = save(tmp_path, 20)
    (newest / "pytorch_model.bin").write_bytes(b"x")
    said = []
    assert select_for_resume(tmp_path, FINGERPRINT, say=said.append) == tmp_path / "checkpoint-10"
    assert "pytorch_model.bin is not listed in the manifest" in said[0]


def test_changed_recipe_is_refused_with_a_per_key_diff_unless_forced(tmp_path, capsys):
    save(tmp_path, 10)
    changed = {**FINGERPRINT, "method.learning_rate": 1e-4, "world_size": 8, "data_hash": "def"}
    code = report_errors(select_for_resume, tmp_path, changed)
    err = capsys.readouterr().err
    assert code == ExitCode.RECIPE and "Traceback" not in err
    assert "method.learning_rate: 0.0002 -> 0.0001" in err
    assert "world_size: 1 -> 8" in err and 'data_hash: "abc" -> "def"' in err
    assert "resume=force" in err
    said = []
    assert select_for_resume(tmp_path, changed, "force", say=said.append) == tmp_path / "checkpoint-10"
    assert "method.learning_rate: 0.0002 -> 0.0001" in said[0]


def test_resume_never_refuses_a_folder_with_committed_checkpoints(tmp_path):
    assert select_for_resume(tmp_path / "empty", FINGERPRINT, "never") is None
    save(tmp_path, 10)
    with pytest.raises(RecipeError, match="resume=never"):
        select_for_resume(tmp_path, FINGERPRINT, "never")


def test_recommit_of_a_damaged_step_replaces_it(tmp_path):
    save(tmp_path, 10)
    tear(save(tmp_path, 20) / "optimizer.pt", "flip")
    assert select_for_resume(tmp_path, FINGERPRINT, say=lambda _: None) == tmp_path / "checkpoint-10"
    replaced = save(tmp_path, 20)  # training went on from 10 and saved step 20 again
    assert ck.verify(replaced) == [] and not list(tmp_path.glob(".trash-*"))


def test_retain_keeps_the_newest_and_never_the_last_good_one(tmp_path):
    for step in (10, 20, 30):
        newest = save(tmp_path, step)
        ck.retain(tmp_path, keep=2, newest=newest)
    assert [p.name for p in ck.committed_checkpoints(tmp_path)] == ["checkpoint-30", "checkpoint-20"]
    tear(tmp_path / "checkpoint-30" / "scheduler.pt", "truncate")  # the newest is damaged
    ck.retain(tmp_path, keep=1)  # without `newest`: it finds the newest verified one, 20
    assert (tmp_path / "checkpoint-20").is_dir() and (tmp_path / "checkpoint-30").is_dir()
    write_hf_files(ck.temp_dir_for(tmp_path, 40), 40)  # a leftover from a crash
    ck.retain(tmp_path, keep=1, newest=save(tmp_path, 50))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-50"]


def test_hf_staging_layout_commits_and_clears(tmp_path):
    write_hf_files(ck.hf_staging_dir(tmp_path) / "checkpoint-7", 7)
    final = ck.commit_hf_checkpoint(tmp_path, 7, FINGERPRINT, keep=2)
    assert ck.verify(final) == [] and not ck.hf_staging_dir(tmp_path).exists()


def test_enospc_while_committing_is_a_clear_error_and_the_last_good_one_survives(tmp_path):
    save(tmp_path, 10)
    tmp = write_hf_files(ck.temp_dir_for(tmp_path, 20), 20)

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.raises(OutOfResources) as caught:
        ck.commit(tmp, tmp_path / "checkpoint-20", 20, FINGERPRINT, write=full_disk)
    assert caught.value.exit_code == ExitCode.OUT_OF_RESOURCES
    assert "checkpoint-10" in caught.value.message and "is intact" in caught.value.message
    assert not tmp.exists() and not (tmp_path / "checkpoint-20").exists()
    assert ck.verify(tmp_path / "checkpoint-10") == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_tmpfs_during_a_save_keeps_the_last_good_checkpoint(small_disk):
    save(small_disk, 10)
    tmp = ck.temp_dir_for(small_disk, 20)
    with pytest.raises(OutOfResources) as caught:
        with ck.saving(small_disk, cleanup=tmp):  # what a trainer wraps its save in
            write_hf_files(tmp, 20)
            (tmp / "optimizer.pt").write_bytes(os.urandom(2 << 20))  # more than the disk holds
    assert "no space left" in caught.value.message and "checkpoint-10, is intact" in caught.value.message
    assert not tmp.exists() and ck.verify(small_disk / "checkpoint-10") == []
    assert select_for_resume(small_disk, FINGERPRINT, say=lambda _: None) == small_disk / "checkpoint-10"


def test_a_full_tmpfs_while_writing_the_manifest(small_disk):
    save(small_disk, 10)
    tmp = write_hf_files(ck.temp_dir_for(small_disk, 20), 20)
    filler = small_disk / "filler"
    with pytest.raises(OSError), open(filler, "wb") as f:  # fill every remaining block
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    with pytest.raises(OutOfResources, match="checkpoint-10, is intact"):
        ck.commit(tmp, small_disk / "checkpoint-20", 20, FINGERPRINT)
    filler.unlink()
    assert ck.verify(small_disk / "checkpoint-10") == [] and not (small_disk / "checkpoint-20").exists()


def test_fingerprint_of_real_recipes_and_its_diff():
    from ftrecipes.config.resolve import resolve

    quick = recipe_fingerprint(resolve(["recipe=quickstart"]).recipe)
    assert quick["method.learning_rate"] == 5e-3 and quick["world_size"] == 1 and "data.max_seq_len" in quick
    other = recipe_fingerprint(resolve(["recipe=quickstart", "method.learning_rate=1e-3", "data.max_seq_len=128",
                                        "train.epochs=5"]).recipe)
    assert resume_diff(quick, other) == [f"data.max_seq_len: {quick['data.max_seq_len']} -> 128",
                                         "method.learning_rate: 0.005 -> 0.001"]  # epochs may change
