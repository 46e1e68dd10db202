"""Proprietary-term removal and the compliance checklist of the data report.

Recipe keys: `data.denylist.terms`, `data.denylist.regexes`, `data.denylist.replacement`,
`data.attestations.labels_verified`, `data.attestations.bias_audit`, `data.pii.*` (for the
checklist).

The checklist items are measured where they can be (PII left after redaction, rows in the one
standard format, denylisted terms left) and attested where they cannot (labels verified by
humans, a bias audit): an attestation names who and when, and is shown as missing when absent.
"""

from __future__ import annotations

import re

FEW_ROWS = 500  # below this many training rows, retrieval (RAG) is often the cheaper route


def denylist_pattern(terms, regexes) -> re.Pattern | None:
    parts = [re.escape(t) for t in terms] + [f"(?:{r})" for r in regexes]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class Denylist:
    """Replaces denylisted terms and counts them (the count never names the term's context)."""

    def __init__(self, pattern: re.Pattern | None, replacement: str):
        self.pattern, self.replacement, self.count = pattern, replacement, 0

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        new, n = self.pattern.subn(self.replacement, text)
        self.count += n
        return new


def checklist(*, pii_enabled: bool, pii_residual: dict, standard_rows: int, total_rows: int,
              denylist_configured: bool, denylist_residual: int, attestations: dict, train_rows: int) -> list[dict]:
    """Items `{item, state, detail}` with state ok | missing | failed | off | warning."""
    items = []
    if not pii_enabled:
        items.append({"item": "PII redacted", "state": "off", "detail": "data.pii.enabled=false"})
    else:
        left = sum(pii_residual.values())
        items.append({"item": "PII redacted", "state": "ok" if left == 0 else "failed",
                      "detail": f"{left} detectable entities left in the prepared rows (re-scanned)"})
    items.append({"item": "one standard format", "state": "ok" if standard_rows == total_rows else "failed",
                  "detail": f"{standard_rows}/{total_rows} rows in the internal conversation form"})
    if not denylist_configured:
        items.append({"item": "proprietary terms removed", "state": "off", "detail": "no data.denylist"})
    else:
        items.append({"item": "proprietary terms removed", "state": "ok" if denylist_residual == 0 else "failed",
                      "detail": f"{denylist_residual} denylisted terms left (re-scanned)"})
    for key, label in (("labels_verified", "labels verified by humans"), ("bias_audit", "bias audit done")):
        att = attestations.get(key)
        if att:
            items.append({"item": label, "state": "ok",
                          "detail": f"attested by {att['by']} on {att['date']}" + (f" ({att['note']})" if att.get("note") else "")})
        else:
            items.append({"item": label, "state": "missing", "detail": f"set data.attestations.{key}: {{by, date}}"})
    if train_rows < FEW_ROWS:
        items.append({"item": "enough training rows", "state": "warning",
                      "detail": f"only {train_rows} training rows remain; below {FEW_ROWS}, retrieval (RAG) is "
                                "often cheaper than fine-tuning"})
    else:
        items.append({"item": "enough training rows", "state": "ok", "detail": f"{train_rows} training rows"})
    return items
