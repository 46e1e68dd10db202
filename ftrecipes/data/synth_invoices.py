"""A seeded generator for the quickstart task: pull the fields of an invoice sentence into JSON.

Each invoice has an id (``INV-48213``), a vendor composed from word lists (``Silver Oak Logistics
LLC``), an ISO date, a total and a currency. The sentence states them in one of many templates,
with the amount written in several styles (``$1,250.00``, ``1250.00 EUR``, ``GBP 77.10``). The
answer is a compact JSON object with a fixed key order and a normalised total::

    {"id": "INV-48213", "vendor": "Silver Oak Logistics LLC", "date": "2024-03-15",
     "total": "1250.00", "currency": "USD"}

Every answer depends on its own sentence (ids never repeat within one generator), so no constant
output and no copy of the prompt can score.

`pretrain_corpus` writes in-domain text for the tiny base model (`recipes/model/tiny.yaml`): the same
sentences followed by the same facts in non-JSON layouts (``vendor=...; id=...``, ``Vendor: ...``
lines, ``a | b | c`` rows, CSV). The base learns the vocabulary and to copy fields, but never sees
the instruction or the JSON answer, so its exact match on the SFT task stays near zero.

Regenerate the shipped file (data recipe `quickstart`, ``data.path: builtin:invoices.jsonl``)::

    python -m ftrecipes.data.synth_invoices --out ftrecipes/data/builtin/invoices.jsonl \\
        --rows 1600 --seed 1234
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

# Bump when the generated text changes: it is part of the tiny model's cache fingerprint.
GENERATOR_VERSION = 1

INSTRUCTIONS = [
    "Extract the invoice fields as JSON.",
    "Extract the invoice fields as JSON.",
    "Return the invoice id, vendor, date, total and currency as JSON.",
    "Read the message and give the invoice fields as a JSON object.",
]

_VENDOR_FIRST = [
    "Acme", "Northwind", "Blue Harbor", "Silver Oak", "Granite", "Summit", "Pioneer", "Redwood",
    "Crescent", "Atlas", "Evergreen", "Lakeside", "Ironbridge", "Maple", "Orion", "Falcon",
    "Sterling", "Cobalt", "Willow", "Beacon", "Cedar", "Harbor Light", "Juniper", "Keystone",
    "Lighthouse", "Meridian", "Nova", "Oakridge", "Polaris", "Quartz", "Riverside", "Sapphire",
    "Timber", "Union", "Vertex", "Westfield", "Zenith", "Amber", "Birch", "Copper",
]
_VENDOR_SECOND = [
    "Traders", "Logistics", "Supplies", "Systems", "Foods", "Labs", "Works", "Textiles",
    "Electric", "Media", "Partners", "Analytics", "Builders", "Consulting", "Outfitters",
    "Printing", "Freight", "Software", "Dental", "Bakery", "Hardware", "Energy", "Design",
    "Catering", "Security",
]
_VENDOR_SUFFIX = ["", "", "", "Inc", "LLC", "Ltd", "GmbH", "Corp", "Co"]
_ID_PREFIX = ["INV", "INV", "INV", "BL", "SO", "AR"]
_CURRENCIES = ["USD", "USD", "EUR", "GBP", "CAD"]
_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£"}

# {id} {vendor} {date} {amount}; the amount is rendered by `_amount_text`.
TEMPLATES = [
    "Invoice {id} from {vendor}, dated {date}, totals {amount}.",
    "{vendor} billed us {amount} on {date} (invoice {id}).",
    "Please pay {amount} to {vendor} for invoice {id}, issued {date}.",
    "On {date}, {vendor} sent invoice {id} for {amount}.",
    "We received invoice {id} dated {date} from {vendor}; the amount due is {amount}.",
    "Payment of {amount} is due to {vendor} under invoice number {id} ({date}).",
    "{vendor} invoice {id}: {amount}, issued on {date}.",
    "Reminder: invoice {id} for {amount} from {vendor} was issued {date}.",
    "The bill from {vendor} ({id}) came to {amount} and is dated {date}.",
    "Got the invoice from {vendor} today: {id}, {amount}, invoice date {date}.",
    "Invoice no. {id} | {vendor} | {date} | {amount}",
    "Accounts payable: {vendor} submitted {id} on {date} totaling {amount}.",
    "Could you process invoice {id} from {vendor}? It is for {amount} and dated {date}.",
    "{amount} owed to {vendor}, see invoice {id} dated {date}.",
    "Dated {date}, invoice {id} from {vendor} lists a total of {amount}.",
    "Forwarding invoice {id} ({vendor}, {date}) for {amount}.",
    "Hi team, {vendor} just invoiced us {amount}, ref {id}, date {date}.",
    "Total due: {amount}. Vendor: {vendor}. Invoice: {id}. Date: {date}.",
    "Our records show {vendor} issued invoice {id} on {date} in the amount of {amount}.",
    "Invoice {id} ({date}) from {vendor} is still open: {amount}.",
    "{vendor} sent over {id} on {date}, and it comes to {amount}.",
    "Approved: {amount} for {vendor}, invoice {id} of {date}.",
    "Can someone check invoice {id}? {vendor} says we owe {amount} since {date}.",
    "Vendor {vendor} / invoice {id} / issued {date} / total {amount}",
]
_FILLERS = [
    "", "", "", "", " Thanks!", " Terms are net thirty.", " Please file it under this quarter.",
    " Let me know if anything looks off.", " The PDF is attached.", " Paid by bank transfer.",
]


def _vendor(rng: random.Random) -> str:
    parts = [rng.choice(_VENDOR_FIRST), rng.choice(_VENDOR_SECOND), rng.choice(_VENDOR_SUFFIX)]
    return " ".join(p for p in parts if p)


def _amount_text(rng: random.Random, total: str, currency: str) -> str:
    whole, cents = total.split(".")
    grouped = f"{int(whole):,}.{cents}"
    shown = rng.choice([total, grouped])
    styles = [f"{shown} {currency}", f"{currency} {shown}"]
    if currency in _SYMBOL:
        styles += [f"{_SYMBOL[currency]}{shown}"] * 2
    return rng.choice(styles)


def random_invoice(rng: random.Random, used_ids: set[str]) -> dict[str, str]:
    """One invoice's facts; `used_ids` keeps ids (and so answers) unique within a generator."""
    while True:
        digits = rng.randint(4, 6)
        invoice_id = f"{rng.choice(_ID_PREFIX)}-{rng.randint(10 ** (digits - 1), 10**digits - 1)}"
        if invoice_id not in used_ids:
            used_ids.add(invoice_id)
            break
    total = f"{rng.randint(5, 99999) + rng.randint(0, 99) / 100:.2f}"
    if rng.random() < 0.2:
        total = f"{rng.randint(5, 999)}.00"
    return {
        "id": invoice_id,
        "vendor": _vendor(rng),
        "date": f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "total": total,
        "currency": rng.choice(_CURRENCIES),
    }


def invoice_sentence(rng: random.Random, facts: dict[str, str]) -> str:
    amount = _amount_text(rng, facts["total"], facts["currency"])
    text = rng.choice(TEMPLATES).format(
        id=facts["id"], vendor=facts["vendor"], date=facts["date"], amount=amount
    )
    filler = rng.choice(_FILLERS)
    if filler and not text.endswith((".", "?", "!", ")")):
        text += "."
    return text + filler


def invoice_json(facts: dict[str, str]) -> str:
    """The answer: compact JSON, keys always in the order id, vendor, date, total, currency."""
    keys = ("id", "vendor", "date", "total", "currency")
    return json.dumps({k: facts[k] for k in keys}, ensure_ascii=False)


def sft_rows(n: int, seed: int) -> list[dict[str, str]]:
    """`n` alpaca rows ({"instruction", "input", "output"}), reproducible from `seed`."""
    rng = random.Random(seed)
    used: set[str] = set()
    rows = []
    for _ in range(n):
        facts = random_invoice(rng, used)
        rows.append(
            {
                "instruction": rng.choice(INSTRUCTIONS),
                "input": invoice_sentence(rng, facts),
                "output": invoice_json(facts),
            }
        )
    return rows


# Record layouts for pretraining. The JSON one uses other key names than the SFT answer, so the
# base model knows JSON syntax (as real base models do) but not the task's schema.
_JSON_KEYS = {"id": "number", "vendor": "supplier", "date": "issued", "total": "amount", "currency": "ccy"}


def _record(rng: random.Random, facts: dict[str, str]) -> str:
    """The facts in one of several non-task layouts, with a varying field order."""
    keys = ["id", "vendor", "date", "total", "currency"]
    if rng.random() < 0.5:
        rng.shuffle(keys)
    style = rng.randrange(6)
    if style == 0:
        return "; ".join(f"{k}={facts[k]}" for k in keys)
    if style == 1:
        return "\n".join(f"{k.capitalize()}: {facts[k]}" for k in keys)
    if style == 2:
        return " | ".join(facts[k] for k in keys) + "\n(" + ", ".join(keys) + ")"
    if style == 3:
        return ",".join(keys) + "\n" + ",".join(f'"{facts[k]}"' for k in keys)
    if style == 4:
        return json.dumps({_JSON_KEYS[k]: facts[k] for k in keys}, ensure_ascii=False)
    return " ".join(f"<{k}> {facts[k]}" for k in keys)


def pretrain_corpus(n_docs: int, seed: int) -> Iterator[str]:
    """In-domain documents for the tiny base: sentences, sentence + record pairs, records alone."""
    rng = random.Random(seed)
    used: set[str] = set()
    for _ in range(n_docs):
        facts = random_invoice(rng, used)
        kind = rng.random()
        if kind < 0.7:
            yield invoice_sentence(rng, facts) + "\n" + _record(rng, facts)
        elif kind < 0.85:
            yield invoice_sentence(rng, facts)
        else:
            yield _record(rng, facts) + "\n" + invoice_sentence(rng, facts)


def write_jsonl(rows: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="alpaca JSONL file to write")
    parser.add_argument("--rows", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    rows = sft_rows(args.rows, args.seed)
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
