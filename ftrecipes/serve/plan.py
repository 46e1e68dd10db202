"""What to serve and the exact server command: `serve_plan(args) -> dict`, with no heavy imports.

Everything here reads files only (the run dirs' `recipe.resolved.yaml`, `model/config.json`,
`adapter/adapter_config.json`, tokenizer files), so the command and the serve config render on a
machine without vLLM, torch or a GPU.

From the run's recipe:

- `hardware.accelerator`, `hardware.gpus_per_node`, `hardware.nodes` -> vLLM's
  `--tensor-parallel-size` (the GPUs of one node, lowered to a divisor of the model's attention
  heads, which vLLM requires) and `--pipeline-parallel-size` (the nodes); `--device cpu` for
  `transformers serve` on a CPU preset.
- `data.max_seq_len` -> `--max-model-len` (the length the model was tuned at; capped at the model's
  `max_position_embeddings`; `max_model_len=` overrides it).
- `model.dtype` -> `--dtype`; `model.source`/`model.path`/`model.revision` -> the base that LoRA
  adapters are served on; `trust_remote_code` -> `--trust-remote-code`.
- the chat template saved with the tuned tokenizer (`model/` or `adapter/`) -> `--chat-template`,
  copied to the serve folder, so the server formats chats exactly as training did.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ftrecipes.errors import EnvironmentProblem, RecipeError

# vLLM preallocates LoRA slots of one of these ranks (vllm/config/lora.py `max_lora_rank` choices).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _recipe(run_dir: Path):
    from ftrecipes.config.resolve import load_resolved

    path = run_dir / "recipe.resolved.yaml"
    if not path.is_file():
        raise EnvironmentProblem(f"{run_dir} is not a run dir (no recipe.resolved.yaml)",
                                 hint="give the run dir that `python -m ftrecipes.launch` printed")
    return load_resolved(path)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def chat_template(folder: Path) -> str | None:
    """The chat template saved with a tokenizer: `chat_template.jinja` (transformers >= 4.43
    writes it) or the `chat_template` field of `tokenizer_config.json` (older saves)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    template = _json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: the server needs the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def base_model(recipe) -> tuple[str, str | None]:
    """`(path or hub id, revision)` of a recipe's base model, without building or downloading it."""
    model = recipe.model
    if model.source == "build":
        from ftrecipes.model.tiny import tiny_model_dir

        return str(tiny_model_dir(model)), None
    if model.source == "hub":
        return str(model.path), model.revision
    return str(Path(model.path).expanduser()), None


def lora_adapter(run_dir: Path) -> dict:
    """The adapter's config when `run_dir/adapter` is a plain LoRA adapter that vLLM can load.

    Raises `RecipeError` for a peft adapter vLLM cannot serve (DoRA, IA3, prompt tuning,
    AdaLoRA's rank pattern) or an absent one, saying how to serve the run instead.
    """
    config_path = run_dir / "adapter" / "adapter_config.json"
    if not config_path.is_file():
        raise EnvironmentProblem(f"no trained adapter in {run_dir / 'adapter'}",
                                 hint="run the train stage with a LoRA-family method, or serve a merged model/")
    config = _json(config_path)
    kind = config.get("peft_type")
    if kind != "LORA" or config.get("use_dora") or config.get("rank_pattern"):
        what = "DoRA" if config.get("use_dora") else ("AdaLoRA" if config.get("rank_pattern") else kind)
        raise RecipeError(f"{run_dir}: vLLM serves plain LoRA adapters only; this run's adapter is {what}",
                          hint="merge it (export.merge=true, then serve run_dir=... alone, which serves model/)")
    return config


def _heads(folder: Path | None, recipe) -> tuple[int | None, int | None]:
    config = _json(folder / "config.json") if folder else {}
    heads = config.get("num_attention_heads") or recipe.model.architecture.get("num_attention_heads")
    return heads, config.get("max_position_embeddings") or recipe.model.architecture.get("max_position_embeddings")


def parallelism(recipe, heads: int | None, override: int | None, notes: list[str]) -> tuple[int, int]:
    """`(tensor_parallel_size, pipeline_parallel_size)` from the run's hardware preset."""
    hw = recipe.hardware
    gpus = hw.gpus_per_node if hw.accelerator == "cuda" else 1
    tp = override or max(1, gpus)
    if heads and heads % tp:
        fitted = max(d for d in range(1, tp + 1) if heads % d == 0)
        notes.append(f"tensor parallel size {fitted}, not {tp}: vLLM splits the {heads} attention heads evenly")
        tp = fitted
    pp = hw.nodes if hw.accelerator == "cuda" and hw.nodes > 1 else 1
    if pp > 1:
        notes.append(f"{hw.nodes} nodes: pipeline parallel size {pp}; vLLM needs a Ray cluster across them")
    if hw.accelerator != "cuda":
        notes.append(f"the run's hardware preset '{hw.name}' has no GPU: vLLM needs one (tensor parallel size 1)")
    return tp, pp


def _max_len(recipe, limit: int | None, override: int | None) -> int:
    wanted = override or int(recipe.data.max_seq_len)
    return min(wanted, limit) if limit and not override else wanted


def _served(run_dir: Path, choice: str) -> str:
    """`merged` (a full model in model/) or `adapter`, for `model=auto|merged|adapter`."""
    merged = (run_dir / "model" / "config.json").is_file()
    adapter = (run_dir / "adapter" / "adapter_config.json").is_file()
    if choice == "auto":
        if merged or adapter:
            return "merged" if merged else "adapter"
        raise EnvironmentProblem(f"{run_dir} has neither model/ nor adapter/", hint="run the train stage first")
    if (choice == "merged" and not merged) or (choice == "adapter" and not adapter):
        fix = "run the export stage with export.merge=true" if choice == "merged" else "train with a LoRA method"
        raise EnvironmentProblem(f"{run_dir} has no {'model/' if choice == 'merged' else 'adapter/'}", hint=fix)
    return choice


def serve_plan(args: dict) -> dict:
    """The serve config for parsed `python -m ftrecipes.serve` arguments (see `ftrecipes.serve`)."""
    backend, notes = args["backend"], []
    tenants = {name: Path(p) for name, p in args["adapters"].items()}
    run_dir = Path(args["run_dir"]) if args["run_dir"] else None
    if not tenants and run_dir is None:
        raise RecipeError("give run_dir=RUN_DIR, or adapters={name: RUN_DIR, ...}",
                          hint="python -m ftrecipes.serve run_dir=runs/quickstart/2026-01-01_12-00-00")
    if backend == "transformers" and args["host"] not in LOOPBACK:
        raise RecipeError(f"backend=transformers binds to loopback only, not host={args['host']}",
                          hint="transformers serve has no authentication: keep host=127.0.0.1, or use backend=vllm "
                               "(with --api-key) for a shared endpoint")
    if tenants and backend != "vllm":
        raise RecipeError("adapters= (one LoRA adapter per tenant) needs backend=vllm",
                          hint="transformers serve loads one model folder: serve each merged run on its own port")
    if tenants and run_dir is not None:
        raise RecipeError("give run_dir= or adapters=, not both",
                          hint="adapters={name: RUN_DIR, ...} serves every tenant's adapter on their shared base")

    adapters: dict[str, Path] = {}
    if tenants:
        recipes = {name: _recipe(path) for name, path in tenants.items()}
        first = next(iter(recipes.values()))
        base = base_model(first)
        for name, rec in recipes.items():
            if base_model(rec) != base:
                raise RecipeError(f"tenant '{name}' ({tenants[name]}) was tuned from {base_model(rec)[0]}, "
                                  f"not {base[0]}", hint="serve adapters of one base together; run another server for "
                                                         "the other base")
        configs = {name: lora_adapter(path) for name, path in tenants.items()}
        adapters = {name: (path / "adapter").resolve() for name, path in tenants.items()}
        recipe, model_path, revision, tokenizer_dir = first, base[0], base[1], next(iter(adapters.values()))
        served_name = base[0].rstrip("/").split("/")[-1]
        templates = {chat_template(p) for p in adapters.values()}
        if len(templates) > 1:
            notes.append("the tenants' chat templates differ; the server uses the first tenant's for every chat")
        out = Path(args["out"]) if args["out"] else Path("runs") / "serve" / "+".join(tenants)
    else:
        recipe = _recipe(run_dir)
        served = _served(run_dir, args["model"])
        if served == "adapter" and backend == "transformers":
            raise EnvironmentProblem(f"{run_dir} has no merged model/ for transformers serve to load",
                                     hint="run the export stage with export.merge=true, or use backend=vllm")
        if served == "adapter":
            configs = {run_dir.name: lora_adapter(run_dir)}
            adapters = {args["name"] or run_dir.resolve().name: (run_dir / "adapter").resolve()}
            model_path, revision = base_model(recipe)
            tokenizer_dir = run_dir / "adapter"
        else:
            configs, model_path, revision = {}, str((run_dir / "model").resolve()), None
            tokenizer_dir = run_dir / "model"
        served_name = args["name"] or run_dir.resolve().name
        out = Path(args["out"]) if args["out"] else run_dir / "serve"

    local_base = Path(model_path) if Path(model_path).is_dir() else None
    heads, max_positions = _heads(local_base, recipe)
    template = chat_template(tokenizer_dir) or (chat_template(local_base) if local_base else None)
    if template is None:
        from ftrecipes.model.load import FALLBACK_CHAT_TEMPLATE

        template = FALLBACK_CHAT_TEMPLATE
        notes.append("no chat template was saved with the model: using ftrecipes' '### role:' fallback, "
                     "as training did")
    plan = {
        "backend": backend, "model": model_path, "revision": revision, "served_model_name": served_name,
        "host": args["host"], "port": args["port"], "dtype": str(recipe.model.dtype),
        "max_model_len": _max_len(recipe, max_positions, args["max_model_len"]),
        "chat_template": str((out / "chat_template.jinja").resolve()),
        "adapters": {name: str(path) for name, path in adapters.items()},
        "trust_remote_code": bool(recipe.trust_remote_code), "notes": notes, "out": str(out),
    }
    if backend == "vllm":
        plan["tensor_parallel_size"], plan["pipeline_parallel_size"] = parallelism(
            recipe, heads, args["tensor_parallel_size"], notes)
        if adapters:
            ranks = [int(c.get("r") or 8) for c in configs.values()]
            plan["max_lora_rank"] = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), max(ranks))
            if any(c.get("modules_to_save") for c in configs.values()):
                notes.append("an adapter also saves whole modules (modules_to_save), which vLLM's LoRA ignores: "
                             "serve the merged model/ of that run instead")
            if recipe.method.name == "qlora":
                notes.append("qlora adapters are applied to the full-precision base here, as export merges them")
    else:
        plan["device"] = "cpu" if recipe.hardware.accelerator == "cpu" else "auto"
        plan["served_model_name"] = model_path  # transformers serve names the model by its path
    plan["command"] = command(plan)
    plan["command_line"] = shlex.join(plan["command"])
    plan["_template_text"] = template
    return plan


def command(plan: dict) -> list[str]:
    """The server's argv: `vllm serve ...` or `transformers serve ...` (the exact printed command)."""
    host, port = plan["host"], str(plan["port"])
    if plan["backend"] == "transformers":
        argv = ["transformers", "serve", plan["model"], "--host", host, "--port", port,
                "--device", plan["device"], "--dtype", plan["dtype"]]
        return argv + (["--trust-remote-code"] if plan["trust_remote_code"] else [])
    argv = ["vllm", "serve", plan["model"], "--host", host, "--port", port,
            "--served-model-name", plan["served_model_name"], "--dtype", plan["dtype"],
            "--tensor-parallel-size", str(plan["tensor_parallel_size"]),
            "--max-model-len", str(plan["max_model_len"]), "--chat-template", plan["chat_template"]]
    if plan["pipeline_parallel_size"] > 1:
        argv += ["--pipeline-parallel-size", str(plan["pipeline_parallel_size"])]
    if plan["revision"]:
        argv += ["--revision", plan["revision"]]
    if plan["adapters"]:
        argv += ["--enable-lora", "--max-loras", str(len(plan["adapters"])),
                 "--max-lora-rank", str(plan["max_lora_rank"]), "--lora-modules"]
        argv += [f"{name}={path}" for name, path in plan["adapters"].items()]
    return argv + (["--trust-remote-code"] if plan["trust_remote_code"] else [])


def write_plan(plan: dict) -> Path:
    """Writes `serve.json`, `serve_command.sh` and `chat_template.jinja` to `plan['out']`."""
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "chat_template.jinja").write_text(plan["_template_text"], encoding="utf-8")
    public = {k: v for k, v in plan.items() if not k.startswith("_")}
    (out / "serve.json").write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
    script = out / "serve_command.sh"
    script.write_text("#!/bin/sh\n# Written by python -m ftrecipes.serve; see serve.json.\nexec "
                      + plan["command_line"] + "\n", encoding="utf-8")
    script.chmod(0o755)
    return out
