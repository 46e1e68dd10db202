"""`python -m ftrecipes.serve` on the real tiny tuned run: the vLLM command and serve config (dry
run: no GPU here), one base with a LoRA adapter per tenant, argument errors, and a real
`transformers serve` on 127.0.0.1 whose greedy chat completion matches `generate`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_module
from tiny_tuned_run import tuned_run  # noqa: F401 - the session fixture

from ftrecipes.errors import ExitCode


def _other_run(source: Path, dest: Path, **changes) -> Path:
    """A second run dir sharing the source's adapter and model, with recipe keys changed."""
    dest.mkdir()
    for name in ("adapter", "model"):
        (dest / name).symlink_to(source / name)
    text = (source / "recipe.resolved.yaml").read_text()
    recipe = yaml.safe_load(text)
    for dotted, value in changes.items():
        node = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = {**node[leaf], **value} if isinstance(value, dict) else value
    (dest / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return dest


def test_vllm_command_and_serve_config_render_without_vllm_or_gpu(tuned_run):  # noqa: F811
    recipe, run_dir = tuned_run
    result = run_module("ftrecipes.serve", f"run_dir={run_dir}", "dry_run=true")
    assert result.code == 0, result.err
    model = run_dir / "model"
    expected = (f"vllm serve {model} --host 127.0.0.1 --port 8000 --served-model-name run --dtype float32 "
                f"--tensor-parallel-size 1 --max-model-len {recipe.data.max_seq_len} "
                f"--chat-template {run_dir / 'serve' / 'chat_template.jinja'}")
    assert result.out.splitlines()[0] == expected
    config = json.loads((run_dir / "serve" / "serve.json").read_text())
    assert config["command_line"] == expected and config["tensor_parallel_size"] == 1
    assert config["max_model_len"] == recipe.data.max_seq_len == 256
    assert (run_dir / "serve" / "chat_template.jinja").read_text() == (model / "chat_template.jinja").read_text()
    script = (run_dir / "serve" / "serve_command.sh").read_text()
    assert script.rstrip().endswith("exec " + expected) and os.access(run_dir / "serve" / "serve_command.sh", os.X_OK)
    assert "has no GPU" in result.out


def test_tensor_parallel_size_comes_from_the_hardware_preset(tuned_run, tmp_path):  # noqa: F811
    _, run_dir = tuned_run
    preset = yaml.safe_load((REPO / "recipes" / "hardware" / "2n_8x_h100.yaml").read_text())
    other = _other_run(run_dir, tmp_path / "h100", hardware=preset)
    result = run_module("ftrecipes.serve", f"run_dir={other}", "model=merged", "dry_run=true")
    assert result.code == 0, result.err
    config = json.loads((other / "serve" / "serve.json").read_text())
    # model/config.json has 2 attention heads: vLLM needs tp to divide them, so 8 becomes 2.
    assert config["tensor_parallel_size"] == 2 and config["pipeline_parallel_size"] == 2
    assert "--tensor-parallel-size 2" in result.out and "--pipeline-parallel-size 2" in result.out
    assert "splits the 2 attention heads evenly" in result.out and "Ray cluster" in result.out


def test_one_base_with_a_lora_adapter_per_tenant(tuned_run, tmp_path):  # noqa: F811
    _, run_dir = tuned_run
    other = _other_run(run_dir, tmp_path / "tenant_b")
    out = tmp_path / "serve"
    result = run_module("ftrecipes.serve", f"adapters={{tenant_a: {run_dir}, tenant_b: {other}}}", f"out={out}",
                        "dry_run=true")
    assert result.code == 0, result.err
    config = json.loads((out / "serve.json").read_text())
    assert config["adapters"] == {"tenant_a": str((run_dir / "adapter").resolve()),
                                  "tenant_b": str((other / "adapter").resolve())}
    assert config["max_lora_rank"] == 16 and Path(config["model"]).name.startswith("tiny-")
    assert (f"--enable-lora --max-loras 2 --max-lora-rank 16 --lora-modules tenant_a={config['adapters']['tenant_a']} "
            f"tenant_b={config['adapters']['tenant_b']}") in result.out
    different = _other_run(run_dir, tmp_path / "other_base", **{"model.build.seed": 7})
    result = run_module("ftrecipes.serve", f"adapters={{tenant_a: {run_dir}, tenant_c: {different}}}",
                        f"out={out}", "dry_run=true")
    assert result.code == ExitCode.RECIPE and "tenant 'tenant_c'" in result.err and "Traceback" not in result.err


def test_argument_errors_are_clear(tuned_run):  # noqa: F811
    _, run_dir = tuned_run
    result = run_module("ftrecipes.serve", f"run_dir={run_dir}", "prot=8001")
    assert result.code == ExitCode.RECIPE
    assert "unknown argument 'prot'" in result.err and "did you mean port=?" in result.err
    result = run_module("ftrecipes.serve", f"run_dir={run_dir}", "backend=transformer")
    assert result.code == ExitCode.RECIPE and "did you mean backend=transformers?" in result.err
    result = run_module("ftrecipes.serve", f"run_dir={run_dir}", "backend=transformers", "host=0.0.0.0")
    assert result.code == ExitCode.RECIPE and "loopback" in result.err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_serve_without_vllm_says_how_to_install_and_keeps_the_command(tuned_run, tmp_path):  # noqa: F811
    _, run_dir = tuned_run
    result = run_module("ftrecipes.serve", f"run_dir={run_dir}", f"out={tmp_path}")
    assert result.code == ExitCode.ENVIRONMENT
    assert "pip install 'ftrecipes[vllm]'" in result.err and "Traceback" not in result.err
    assert (tmp_path / "serve_command.sh").is_file() and result.out.startswith("vllm serve ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")),
                    reason="transformers serve needs its serving extra (pip install 'ftrecipes[serve]')")
def test_transformers_serve_answers_like_generate(tuned_run, tmp_path):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run_dir = tuned_run
    rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    messages = rows[0]["messages"][:-1]
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ftrecipes.serve", f"run_dir={run_dir}", "backend=transformers",
                             f"port={port}", f"out={tmp_path / 'serve'}"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if _get(f"http://127.0.0.1:{port}/health", 2).get("status") == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 180 s"
            time.sleep(1)
        body = json.dumps({"messages": messages, "temperature": 0, "max_tokens": 16}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole session: ftrecipes.serve exec'd the server
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    served = answer["choices"][0]["message"]["content"]

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert served == expected
    assert answer["model"].startswith(str((run_dir / "model").resolve()))



def test_key_value_parser_rejoins_unquoted_braces_and_checks_kinds():
    from ftrecipes import cli_args as a
    from ftrecipes.errors import RecipeError
    from ftrecipes.serve.__main__ import ARGS, PROG

    # `adapters={tenant_a: runs/a, tenant_b: runs/b}` typed without quotes: the shell splits it.
    args = a.parse(["adapters={tenant_a:", "runs/a,", "tenant_b:", "runs/b}", "port=9000", "dry_run=true"], ARGS, PROG)
    assert args["adapters"] == {"tenant_a": "runs/a", "tenant_b": "runs/b"}
    assert (args["port"], args["dry_run"], args["host"], args["backend"]) == (9000, True, "127.0.0.1", "vllm")
    with pytest.raises(RecipeError, match="port=eighty: expected a whole number"):
        a.parse(["port=eighty"], ARGS, PROG)
    with pytest.raises(RecipeError, match="given twice"):
        a.parse(["port=1", "port=2"], ARGS, PROG)
