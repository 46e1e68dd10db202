"""The data report: `data/report.json`, `data/report.md` and `data/lengths.png`.

The PNG is drawn by a tiny pure-python writer (zlib + struct), so the core install needs no
matplotlib. Nothing here prints row content: the report holds counts, hashes and lengths only.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np


def length_stats(lengths: list[int], bins: int = 40) -> dict:
    if not lengths:
        return {"count": 0}
    arr = np.asarray(lengths)
    counts, edges = np.histogram(arr, bins=min(bins, max(1, int(arr.max() - arr.min()) + 1)))
    pct = {f"p{q}": int(np.percentile(arr, q)) for q in (5, 25, 50, 75, 95, 99)}
    return {"count": int(arr.size), "min": int(arr.min()), "max": int(arr.max()), "mean": round(float(arr.mean()), 1),
            **pct, "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": counts.tolist()}}


def write_png(path: Path, counts: list[int], width: int = 480, height: int = 200) -> None:
    """A bar chart of `counts` as an 8-bit grayscale PNG (white background, dark bars, axis line)."""
    n = max(len(counts), 1)
    top = max(max(counts, default=0), 1)
    bar = max(width // n, 1)
    width = bar * n
    rows = []
    for y in range(height):
        level = (height - 1 - y) / (height - 1) * top  # value at this pixel row
        line = bytearray([255]) * width
        for i, c in enumerate(counts):
            if c > 0 and c >= level:
                line[i * bar : (i + 1) * bar - (1 if bar > 2 else 0)] = bytes([60]) * (bar - (1 if bar > 2 else 0))
        if y == height - 1:
            line = bytearray([0]) * width
        rows.append(b"\x00" + bytes(line))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def write(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
    hist = report.get("token_lengths", {}).get("histogram")
    if hist:
        write_png(out / "lengths.png", hist["counts"])


def markdown(r: dict) -> str:
    lines = [f"# Data report: {r['name']}", "", f"Fingerprint `{r['fingerprint'][:16]}`, seed {r['seed']}, "
             f"prepared in {r['seconds']} s.", "", "## Compliance checklist", "", "| item | state | detail |", "|---|---|---|"]
    lines += [f"| {c['item']} | **{c['state']}** | {c['detail']} |" for c in r["checklist"]]
    lines += ["", "## Rows through each step", "", "| step | in | out | removed, by reason |", "|---|---|---|---|"]
    for step in r["steps"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in step.get("removed", {}).items() if v) or ""
        lines.append(f"| {step['step']} | {step['in']} | {step['out']} | {reasons} |")
    lines += ["", "## Splits", "", "| split | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["splits"].items()]
    red = r["redactions"]
    lines += ["", f"## PII redactions ({r['pii_mode']})", "", "| entity | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(red.items())] or ["| (none) | 0 |"]
    lines += ["", f"Denylisted terms removed: {r['denylist_removed']}.", "",
              "## Duplicates", "", f"Exact: {r['duplicates']['exact']}. Near (Jaccard >= "
              f"{r['duplicates']['threshold']}): {r['duplicates']['near']} rows in {r['duplicates']['near_clusters']} clusters.",
              "", "## Token lengths", ""]
    tl = r.get("token_lengths", {})
    if tl.get("count"):
        lines.append(f"{tl['count']} rows; min {tl['min']}, median {tl['p50']}, p95 {tl['p95']}, max {tl['max']} "
                     "tokens. Histogram: `lengths.png`.")
    pk = r.get("packing")
    if pk and pk.get("efficiency") is not None:
        lines += ["", "## Packing", "", f"{pk['rows']} training rows into {pk['sequences']} sequences of "
                  f"{pk['seq_length']} tokens: efficiency {pk['efficiency']:.2%}."]
    lines += ["", "## Inputs", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {f} | `{h[:16]}` |" for spec in r["inputs"].values() for f, h in spec.items()]
    lines += ["", "## Tools", "", ", ".join(f"{k} {v}" for k, v in r["versions"].items()), ""]
    return "\n".join(lines)
