"""Text metrics on generated answers: token F1 and format compliance.

- `token_f1(prediction, reference)`: SQuAD-style F1 over the bag of tokens, where a token is a
  run of letters/digits or one CJK character, after lower-casing (so Chinese answers are scored
  per character, as in CMRC);
- `format_compliance(predictions, output_format)`: the fraction of answers that match
  `data.output_format.regex` (full match) or validate against `data.output_format.json_schema`
  (after `json.loads`); None when the recipe declares no format.
"""

from __future__ import annotations

import json
import re
from collections import Counter

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def format_checker(output_format):
    """A function `answer -> bool` for the recipe's output format, or None when none is declared."""
    regex = output_format.get("regex") if output_format else None
    schema = output_format.get("json_schema") if output_format else None
    if regex:
        pattern = re.compile(regex, re.DOTALL)
        return lambda answer: pattern.fullmatch(answer.strip()) is not None
    if schema is not None:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(schema)

        def valid(answer: str) -> bool:
            try:
                return validator.is_valid(json.loads(answer))
            except ValueError:
                return False

        return valid
    return None


def format_compliance(predictions: list[str], output_format) -> float | None:
    check = format_checker(output_format)
    if check is None or not predictions:
        return None
    return sum(bool(check(p)) for p in predictions) / len(predictions)
