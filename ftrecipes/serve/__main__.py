"""Serve a tuned model behind an OpenAI-compatible API, with vLLM or `transformers serve`.

    python -m ftrecipes.serve run_dir=runs/x                          # vLLM on model/ (merged)
    python -m ftrecipes.serve run_dir=runs/x dry_run=true             # print and write the command only
    python -m ftrecipes.serve 'adapters={tenant_a: runs/a, tenant_b: runs/b}'  # one base, a LoRA per tenant
    python -m ftrecipes.serve run_dir=runs/x backend=transformers     # CPU, on 127.0.0.1

ftrecipes writes no server of its own: it renders the exact command of vLLM (`vllm serve`) or
transformers (`transformers serve`), prints it, writes it with the serve config to the run dir
(`serve/serve_command.sh`, `serve/serve.json`, `serve/chat_template.jinja`), then runs it (it
replaces this process) unless `dry_run=true`. What comes from the recipe is listed in
`ftrecipes.serve.plan`. A tenant picks its adapter by sending `"model": "tenant_a"`.

Raises `RecipeError` for bad arguments (did-you-mean), adapters of different bases or of a kind vLLM
cannot load, and a non-loopback host with `backend=transformers`; `EnvironmentProblem` when the
backend's package (`pip install 'ftrecipes[vllm]'`, `'ftrecipes[serve]'`) or, for vLLM, a CUDA GPU is
missing; the command and the config are written first, so they can be run elsewhere.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ftrecipes import cli_args as a
from ftrecipes.errors import EnvironmentProblem, ExitCode, report_errors

PROG = "python -m ftrecipes.serve"
ARGS = {
    "run_dir": a.Arg(a.optional_text, None, "the run to serve (its model/, else its LoRA adapter/)"),
    "adapters": a.Arg(a.text_mapping, {}, "{tenant: RUN_DIR, ...}: one base, one LoRA adapter per tenant (vLLM)"),
    "backend": a.Arg(a.text, "vllm", "server", ("vllm", "transformers")),
    "model": a.Arg(a.text, "auto", "with run_dir: merged (model/), adapter (base + adapter/) or auto",
                   ("auto", "merged", "adapter")),
    "host": a.Arg(a.text, "127.0.0.1", "listen address"),
    "port": a.Arg(a.integer, 8000, "listen port"),
    "name": a.Arg(a.optional_text, None, "served model name (vLLM; default: the run dir's name)"),
    "max_model_len": a.Arg(a.optional_integer, None, "context length (default: the recipe's data.max_seq_len)"),
    "tensor_parallel_size": a.Arg(a.optional_integer, None, "GPUs per replica (default: from the hardware preset)"),
    "out": a.Arg(a.optional_text, None, "where to write the serve files (default: RUN_DIR/serve)"),
    "dry_run": a.Arg(a.boolean, False, "print and write the command and config, start nothing"),
}


def _executable(name: str) -> str:
    """The backend's console script beside this Python (its venv) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else (shutil.which(name) or name)


def check_backend(plan: dict) -> None:
    """Raises `EnvironmentProblem` when the backend cannot start here."""
    from ftrecipes.errors import require

    if plan["backend"] == "vllm":
        require("vllm", extra="vllm", purpose="serving with vLLM")
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem(
                "vLLM needs a CUDA GPU and none is visible here",
                hint=f"run {plan['out']}/serve_command.sh on a GPU machine, or backend=transformers on CPU")
        return
    for module in ("fastapi", "uvicorn", "openai", "pydantic"):
        require(module, extra="serve", purpose="transformers serve")


def serve(argv: list[str]) -> int:
    if any(w in ("-h", "--help") for w in argv):
        print(a.usage(PROG, ARGS, __doc__))
        return ExitCode.OK
    from ftrecipes.serve.plan import serve_plan, write_plan

    args = a.parse(argv, ARGS, PROG)
    plan = serve_plan(args)
    out = write_plan(plan)
    print(plan["command_line"])
    for note in plan["notes"]:
        print(f"note: {note}")
    print(f"wrote {out / 'serve_command.sh'}, {out / 'serve.json'}")
    if plan["host"] in ("0.0.0.0", "::"):
        print("note: listening on every interface; vLLM takes --api-key (or VLLM_API_KEY) to require a key")
    if args["dry_run"]:
        return ExitCode.OK
    check_backend(plan)
    print(f"OpenAI-compatible API at http://{plan['host']}:{plan['port']}/v1", flush=True)
    argv_exec = [_executable(plan["command"][0]), *plan["command"][1:]]
    # Replace this process, so signals (Ctrl-C, a supervisor's SIGTERM) reach the server directly.
    os.execv(argv_exec[0], argv_exec)
    return ExitCode.OK  # not reached


def main(argv: list[str] | None = None) -> int:
    return report_errors(serve, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
