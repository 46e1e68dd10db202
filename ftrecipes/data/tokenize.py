"""Chat templating, tokenization and label masks.

Each row is rendered with the tokenizer's chat template (one jinja render), then cut into
segments at the message contents that are trained: a trained segment runs from the start of an
assistant turn's content through the end-of-turn text that follows it (the EOS or end-of-turn
token, so the model learns to stop). Segments are tokenized in batches by the Rust tokenizer
(`encode_batch_fast`, multi-threaded over all cores); the mask of a token is its segment's flag.
Rendering runs in `num_proc` worker processes for large inputs.

Recipe keys: `data.template.train_on` (`assistant`: every assistant turn; `last`: the last
assistant turn; `all`: every token), `data.num_proc`, `data.debug_rows` (print tokens with their
labels for the first N rows, after redaction).

Templates without a `tool` role (the tiny model's) get tool calls as assistant JSON text and tool
results as user turns starting `Observation:`; templates that do not read `tools` get the tool
list in the system turn. The report records which path was taken.
"""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np

_EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")

_STATE: dict = {}  # per-process: the template view (set before forking workers)


def template_view(tokenizer) -> dict:
    """What the chat template supports, probed once: tool role, tools variable, end-of-turn texts."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    template = _compile_jinja_template(tokenizer.chat_template)
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    view = {"template": template, "specials": specials, "tool_role": True,
            "tools_variable": "tools" in tokenizer.chat_template}
    try:
        template.render(messages=[{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}],
                        add_generation_prompt=False, **specials)
    except Exception:  # the template raises on roles it does not know
        view["tool_role"] = False
    vocab = tokenizer.get_vocab()
    eots = [t for t in _EOT_CANDIDATES if t in vocab]
    if tokenizer.eos_token and tokenizer.eos_token not in eots:
        eots.insert(0, tokenizer.eos_token)
    view["eot"] = tuple(eots)
    return view


def _for_template(row: dict, view: dict) -> tuple[list[dict], list, str]:
    """(messages to render, tools argument, kind) with tool turns adapted to the template."""
    messages = list(row.get("messages", ()))
    kind = "pref" if "chosen" in row else ("prompt" if not messages or messages[-1]["role"] != "assistant" else "sft")
    if kind == "pref":
        messages = messages + row["chosen"]
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [c.get("function", c) for c in m["tool_calls"]]
            text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool" and not view["tool_role"]:
            out.append({"role": "user", "content": f"Observation: {m['content']}"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    tools = row.get("tools")
    if tools and not view["tools_variable"]:
        note = "Tools you can call:\n" + json.dumps(tools, ensure_ascii=False)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + note}
        else:
            out.insert(0, {"role": "system", "content": note})
        tools = None
    return out, tools, kind


def segments(row: dict, train_on: str, view: dict) -> list[tuple[str, int]]:
    """The rendered row as `(text, trained)` pieces; raises ValueError if the template rewrites a
    trained turn so that it cannot be found in the rendered text."""
    if "text" in row:
        eos = view["specials"].get("eos_token", "")
        return [(row["text"] + eos, 1)]
    messages, tools, kind = _for_template(row, view)
    extra = {"tools": tools} if tools else {}
    text = view["template"].render(messages=messages, add_generation_prompt=kind == "prompt",
                                   **view["specials"], **extra)
    if kind == "prompt":
        return [(text, 0)]
    if train_on == "all":
        return [(text, 1)]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = set(assistants[-1:] if train_on == "last" or kind == "pref" else assistants)
    pieces, done, cursor = [], 0, 0
    for i, m in enumerate(messages):
        content = m["content"]
        at = text.find(content, cursor) if content else -1
        if at < 0 and content.strip():
            content = content.strip()
            at = text.find(content, cursor)
        if at < 0:
            if i in trained:
                raise ValueError(f"the chat template changes turn {i + 1}; cannot locate it for labels")
            continue
        end = at + len(content)
        if i in trained:
            end = _after_end_of_turn(text, end, view["eot"])
            if at > done:
                pieces.append((text[done:at], 0))
            pieces.append((text[at:end], 1))
            done = end
        cursor = end
    if done < len(text):
        pieces.append((text[done:], 0))
    return pieces


def _after_end_of_turn(text: str, end: int, eots: tuple) -> int:
    for gap in ("", "\n", " "):
        for eot in eots:
            if text.startswith(gap + eot, end):
                return end + len(gap) + len(eot)
    return end


def _render_chunk(args) -> list:
    rows, train_on = args
    out = []
    for row in rows:
        try:
            out.append(segments(row, train_on, _STATE["view"]))
        except ValueError as exc:
            out.append(str(exc))
    return out


def render_all(rows: list[dict], train_on: str, view: dict, num_proc: int) -> list:
    """Segments for every row (a str instead where the row cannot be labelled), in order."""
    _STATE["view"] = view
    chunk = 2000
    jobs = [(rows[i : i + chunk], train_on) for i in range(0, len(rows), chunk)]
    if num_proc > 1 and len(rows) >= 4 * chunk and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(num_proc) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(job) for job in jobs]
    return [seg for part in parts for seg in part]


def encode(tokenizer, rendered: list, batch_rows: int = 2000, rate_log: list | None = None):
    """Token ids (int32 arrays) and masks (int8 arrays) per row; rows that failed stay None.

    `rate_log` receives `(rows, tokens, seconds)` per batch, for the tail-rate measurement.
    """
    import time

    backend = tokenizer.backend_tokenizer
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
    ids_out: list = [None] * len(rendered)
    mask_out: list = [None] * len(rendered)
    for lo in range(0, len(rendered), batch_rows):
        started = time.perf_counter()
        batch = [(i, seg) for i, seg in enumerate(rendered[lo : lo + batch_rows], start=lo)
                 if not isinstance(seg, str)]
        flat = [text for _, seg in batch for text, _ in seg]
        encodings = encode_batch(flat, add_special_tokens=False)
        k, tokens = 0, 0
        for i, seg in batch:
            ids: list[int] = []
            sizes = []
            for _text, _trained in seg:
                piece = encodings[k].ids
                k += 1
                ids.extend(piece)
                sizes.append(len(piece))
            ids_out[i] = np.array(ids, dtype=np.int32)
            mask_out[i] = np.repeat(np.array([t for _, t in seg], dtype=np.int8), sizes)
            tokens += len(ids)
        if rate_log is not None:
            rate_log.append((len(batch), tokens, time.perf_counter() - started))
    return ids_out, mask_out


def debug_view(tokenizer, ids: list[int], mask: list[int], limit: int = 400) -> str:
    """Tokens with their labels: trained tokens in [brackets], others plain."""
    pieces = tokenizer.convert_ids_to_tokens([int(t) for t in ids[:limit]])
    out = [f"[{p}]" if m else p for p, m in zip(pieces, mask)]
    more = f" ... (+{len(ids) - limit} tokens)" if len(ids) > limit else ""
    return " ".join(out) + more


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
