"""Row formats, normalized to one internal conversation form.

The internal form of a row (what `data/*.jsonl` hold, one JSON object a line):

- SFT (`alpaca`, `chat`, `sharegpt`): `{"messages": [{"role", "content"}, ...], "tools"?: [...]}`;
  roles are `system`, `user`, `assistant` and `tool`; a sharegpt `function_call` turn becomes an
  assistant turn with `tool_calls` (OpenAI form) and an `observation` turn a `tool` turn.
- `preference`: `{"messages": prompt turns, "chosen": [assistant turn], "rejected": [assistant turn]}`,
  from prompt/chosen/rejected columns or the sharegpt form (`conversations` + `chosen`/`rejected`
  `{from, value}` objects).
- `prompt` (GRPO): `{"messages": [system?, user]}`, no assistant turn.
- `text` (continued pretraining): `{"text": str}`.

Recipe keys: `data.format` (`auto` infers it from the first row's columns), `data.columns.*` (the
source column of each field), `data.roles.*` (the source role names of each role).

`normalize` raises `RowProblem(code, reason)`; the reason names the field, never its content.
"""

from __future__ import annotations

import json

FORMATS = ("alpaca", "chat", "sharegpt", "preference", "prompt", "text")
DEFAULT_COLUMNS = {
    "instruction": "instruction", "input": "input", "output": "output", "system": "system",
    "history": "history", "messages": "messages", "conversations": "conversations",
    "tools": "tools", "prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
    "text": "text", "role": None, "content": None,
}
DEFAULT_ROLES = {
    "user": ["user", "human"], "assistant": ["assistant", "gpt", "model", "bot"],
    "system": ["system"], "function_call": ["function_call"], "observation": ["observation", "tool"],
}


class RowProblem(Exception):
    """A bad row: `code` is the counter name in the report, `reason` the message."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def infer_format(row: object, columns: dict) -> str:
    """The format a row's columns suggest, or raises RowProblem."""
    if not isinstance(row, dict):
        raise RowProblem("wrong_type", f"expected a JSON object, got {type(row).__name__}")
    has = lambda field: columns[field] in row  # noqa: E731
    if has("chosen") and has("rejected"):
        return "preference"
    if has("conversations"):
        return "sharegpt"
    if has("messages"):
        return "chat"
    if has("instruction") and has("output"):
        return "alpaca"
    if has("prompt"):
        return "prompt"
    if has("text"):
        return "text"
    raise RowProblem("unknown_format", "cannot infer the row format from its columns")


def mapping(recipe_columns, recipe_roles) -> tuple[dict, dict]:
    """Column and role maps: recipe values over the defaults; roles as source name -> role."""
    columns = dict(DEFAULT_COLUMNS)
    for key, value in (recipe_columns or {}).items():
        if value is not None:
            columns[key] = value
    roles = {}
    for role, defaults in DEFAULT_ROLES.items():
        names = (recipe_roles or {}).get(role) or defaults
        for name in ([names] if isinstance(names, str) else names):
            roles[str(name)] = role
    return columns, roles


def normalize(row: object, fmt: str, columns: dict, roles: dict) -> dict:
    """One source row as the internal form; raises RowProblem for a bad row."""
    if not isinstance(row, dict):
        raise RowProblem("wrong_type", f"expected a JSON object, got {type(row).__name__}")
    if fmt == "alpaca":
        return {"messages": _alpaca(row, columns)}
    if fmt in ("chat", "sharegpt"):
        field = columns["messages" if fmt == "chat" else "conversations"]
        turns = _turns(_field(row, field, list), field, fmt, columns, roles)
        _check_order(turns, need_answer=True)
        out = {"messages": turns}
        tools = _tools(row, columns)
        if tools is not None:
            out["tools"] = tools
        return out
    if fmt == "preference":
        return _preference(row, columns, roles)
    if fmt == "prompt":
        prompt = _field(row, columns["prompt"], (str, list))
        turns = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                 else _turns(prompt, columns["prompt"], "chat", columns, roles))
        if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
            raise RowProblem("bad_role_order", f'"{columns["prompt"]}" must end with a non-empty user turn')
        return {"messages": turns}
    if fmt == "text":
        text = _field(row, columns["text"], str)
        if not text.strip():
            raise RowProblem("empty_text", f'field "{columns["text"]}" is empty')
        return {"text": text}
    raise RowProblem("unknown_format", f"unknown format '{fmt}'")


def _field(row: dict, name: str, types, required: bool = True):
    if name not in row or row[name] is None:
        if required:
            raise RowProblem("missing_field", f'missing field "{name}"')
        return None
    value = row[name]
    if not isinstance(value, types):
        want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise RowProblem("wrong_type", f'field "{name}" must be {want}, got {type(value).__name__}')
    return value


def _alpaca(row: dict, columns: dict) -> list[dict]:
    instruction = _field(row, columns["instruction"], str)
    output = _field(row, columns["output"], str)
    extra = _field(row, columns["input"], str, required=False) or ""
    system = _field(row, columns["system"], str, required=False) or ""
    history = _field(row, columns["history"], list, required=False) or []
    if not instruction.strip():
        raise RowProblem("empty_user", f'field "{columns["instruction"]}" is empty')
    if not output.strip():
        raise RowProblem("empty_assistant", f'field "{columns["output"]}" is empty (an empty assistant turn)')
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for number, pair in enumerate(history, start=1):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowProblem("wrong_type", f'"{columns["history"]}" entry {number} must be [user, assistant] strings')
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _turns(items: list, field: str, fmt: str, columns: dict, roles: dict) -> list[dict]:
    role_key = columns["role"] or ("from" if fmt == "sharegpt" else "role")
    content_key = columns["content"] or ("value" if fmt == "sharegpt" else "content")
    turns = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise RowProblem("wrong_type", f'"{field}" turn {number} must be an object')
        if role_key not in item or content_key not in item:
            raise RowProblem("missing_field", f'"{field}" turn {number} needs "{role_key}" and "{content_key}"')
        source_role, content = item[role_key], item[content_key]
        if not isinstance(content, str):
            if content is None and item.get("tool_calls"):
                content = ""
            else:
                raise RowProblem("wrong_type", f'"{field}" turn {number}: "{content_key}" must be a string')
        role = roles.get(str(source_role))
        if role is None:
            raise RowProblem("unknown_role", f'"{field}" turn {number}: role "{source_role}" is not mapped '
                                             "(set data.roles.*)")
        turns.append(_turn(role, content, item, field, number))
    return turns


def _turn(role: str, content: str, item: dict, field: str, number: int) -> dict:
    if role == "observation":
        return {"role": "tool", "content": content}
    if role == "function_call":
        try:
            call = json.loads(content)
        except json.JSONDecodeError:
            raise RowProblem("invalid_json", f'"{field}" turn {number}: the function call is not valid JSON') from None
        if not isinstance(call, dict) or "name" not in call:
            raise RowProblem("wrong_type", f'"{field}" turn {number}: the function call needs a "name"')
        args = call.get("arguments", {})
        return {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": call["name"], "arguments": args}}]}
    turn = {"role": role, "content": content}
    if role == "assistant" and item.get("tool_calls"):
        turn["tool_calls"] = item["tool_calls"]
    return turn


def _check_order(turns: list[dict], need_answer: bool) -> None:
    """system first (optional), then user, then assistant/tool exchanges; ends on an answer."""
    body = turns[1:] if turns and turns[0]["role"] == "system" else turns
    if not body:
        raise RowProblem("bad_role_order", "the conversation has no turns")
    previous = None
    for number, turn in enumerate(body, start=1):
        role, calls = turn["role"], bool(turn.get("tool_calls"))
        allowed = {None: ("user",), "user": ("assistant",), "assistant": ("user",),
                   "call": ("tool",), "tool": ("assistant", "user")}[previous]
        if role not in allowed:
            raise RowProblem("bad_role_order", f"turn {number} is '{role}' after '{previous or 'the start'}'")
        if role == "assistant" and not calls and not turn["content"].strip():
            raise RowProblem("empty_assistant", f"turn {number} is an empty assistant turn")
        previous = "call" if calls else role
    if need_answer and (body[-1]["role"] != "assistant" or body[-1].get("tool_calls")):
        raise RowProblem("bad_role_order", "the conversation must end with an assistant answer")


def _tools(row: dict, columns: dict):
    tools = row.get(columns["tools"])
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise RowProblem("invalid_json", f'field "{columns["tools"]}" is not valid JSON') from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowProblem("wrong_type", f'field "{columns["tools"]}" must be a list of tool objects')
    return tools


def _preference(row: dict, columns: dict, roles: dict) -> dict:
    if columns["conversations"] in row:
        prompt = _turns(_field(row, columns["conversations"], list), columns["conversations"],
                        "sharegpt", columns, roles)
    else:
        value = _field(row, columns["prompt"], (str, list))
        prompt = ([{"role": "user", "content": value}] if isinstance(value, str)
                  else _turns(value, columns["prompt"], "chat", columns, roles))
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise RowProblem("bad_role_order", "the preference prompt must end with a user turn")
    out = {"messages": prompt}
    for side in ("chosen", "rejected"):
        out[side] = [_answer(_field(row, columns[side], (str, dict, list)), columns[side], columns, roles)]
    return out


def _answer(value, field: str, columns: dict, roles: dict) -> dict:
    """A chosen/rejected answer: a string, a {from,value}/{role,content} object, or a list ending in one."""
    if isinstance(value, list):
        if not value:
            raise RowProblem("empty_assistant", f'field "{field}" is empty (an empty assistant turn)')
        value = value[-1]
    if isinstance(value, dict):
        fmt = "sharegpt" if "from" in value else "chat"
        turn = _turns([value], field, fmt, columns, roles)[0]
        if turn["role"] != "assistant":
            raise RowProblem("bad_role_order", f'field "{field}" must be an assistant turn')
        value = turn["content"]
    if not isinstance(value, str) or not value.strip():
        raise RowProblem("empty_assistant", f'field "{field}" is empty (an empty assistant turn)')
    return {"role": "assistant", "content": value}


def texts_of(row: dict) -> list[str]:
    """Every user-visible string of an internal row (for PII, dedup, denylist and filters)."""
    if "text" in row:
        return [row["text"]]
    out = [m["content"] for m in row["messages"]]
    for m in row["messages"]:
        for call in m.get("tool_calls") or ():
            out.append(json.dumps(call.get("function", call), ensure_ascii=False, sort_keys=True))
    for side in ("chosen", "rejected"):
        out += [m["content"] for m in row.get(side, ())]
    return out


def answer_of(row: dict) -> str | None:
    """The final assistant answer (chosen for preference rows), or None for prompt/text rows."""
    if "chosen" in row:
        return row["chosen"][-1]["content"]
    if "messages" in row and row["messages"] and row["messages"][-1]["role"] == "assistant":
        return row["messages"][-1]["content"]
    return None
