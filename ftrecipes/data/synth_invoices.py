"""A seeded generator for the quickstart task: pull the fields of an invoice note into JSON.

Each invoice has a vendor, a total, a currency and a payment status. The note states them in one
of many templates, next to a date that is not asked for; the amount is written in several styles
(``$59``, ``USD 59``, ``59 euros``) and the status in several phrasings (``is past due``). The
answer is compact JSON with a fixed key order, a currency code and a status word::

    {"vendor":"Northwind","total":59,"currency":"USD","status":"overdue"}

No two rows share an answer, every answer is read from its own note, and neither a constant
output nor a copy of the prompt can score.

`pretrain_corpus` writes in-domain text for the tiny base model (`recipes/model/tiny.yaml`): notes
of the same kind, each followed by the line an accounting system logs for it
(``vendor=Northwind total=59 currency=USD status=overdue``), plus shipment records in JSON with
other keys and a few glossary sentences. The base learns the vocabulary, JSON syntax and where
the facts sit in a note, but it never sees the instruction or the task's JSON schema, so its
exact match on the task is zero; SFT has to teach the format.

Regenerate the shipped file (data recipe `quickstart`, ``data.path: builtin:invoices.jsonl``)::

    python -m ftrecipes.data.synth_invoices --out ftrecipes/data/builtin/invoices.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

# Bump when the generated text changes: it is part of the tiny model's cache fingerprint.
GENERATOR_VERSION = 2
# The shipped file ftrecipes/data/builtin/invoices.jsonl is `sft_rows(SHIPPED_ROWS, SHIPPED_SEED)`.
SHIPPED_ROWS = 1600
SHIPPED_SEED = 1234
KEYS = ("vendor", "total", "currency", "status")

INSTRUCTIONS = [
    "Extract the invoice fields as JSON.",
    "Return the vendor, total, currency and status of this invoice as JSON.",
    "Read the note and give the invoice as a JSON object.",
]
VENDORS = (
    "Acme Globex Initech Umbrella Hooli Stark Wayne Wonka Tyrell Cyberdyne Soylent Vandelay "
    "Monarch Oscorp Duff Gringotts Aperture Massive Dunder Pied Prestige Nakatomi Zorg Kruger "
    "Contoso Fabrikam Northwind Tailspin Litware Proseware Adatum Lucerne Margie Trey Wingtip "
    "Alpine Coho Humongous Ollivander Bluth Sterling Pendant Virtucom Gekko Spacely Cogswell "
    "Krusty Sirius Vehement Zenith Omnicorp Yoyodyne Buynlarge Axiom Carbonel Dinoco Ecumene "
    "Frobozz Galaxon Hexagon Ingen Jupiter Kellerman Lunacorp Mooby Nimbus Octan Paxton"
).split()
MONTHS = "January February March April May June July August September October November December".split()
# (how the amount is written, the currency code it means)
AMOUNT_STYLES = [
    ("${}", "USD"), ("USD {}", "USD"), ("{} dollars", "USD"),
    ("€{}", "EUR"), ("EUR {}", "EUR"), ("{} euros", "EUR"),
    ("£{}", "GBP"), ("GBP {}", "GBP"), ("{} pounds", "GBP"),
    ("CHF {}", "CHF"), ("{} francs", "CHF"),
]
STATUS_PHRASES = {
    "paid": ["was paid", "is settled", "has been paid", "was cleared"],
    "open": ["is still open", "is not paid yet", "awaits payment", "is pending"],
    "overdue": ["is overdue", "is past due", "is late", "missed its due date"],
}
TEMPLATES = [
    "{vendor} billed us {amount} on {date}; the invoice {status}.",
    "Invoice from {vendor}, dated {date}, total {amount}, {status}.",
    "On {date} we received an invoice of {amount} from {vendor}. It {status}.",
    "The {amount} invoice from {vendor} ({date}) {status}.",
    "{vendor} sent a bill for {amount} on {date} which {status}.",
    "Amount due: {amount}. Supplier: {vendor}. Issued {date}, {status}.",
    "Hi team, the {vendor} invoice of {date} for {amount} {status}.",
    "Please note: {amount} to {vendor}, invoiced {date}, {status}.",
    "Reminder from {vendor}: their {date} invoice over {amount} {status}.",
    "Accounts payable: {vendor}, {amount}, {date}. The bill {status}.",
]
GLOSSARY = [
    "The vendor field names the supplier, total is the amount and currency is a code such as USD, EUR, GBP or CHF.",
    "An invoice status is paid, open or overdue.",
    "Check the vendor, the total, the currency and the status of every invoice.",
    "Our ledger keeps one line per invoice: vendor, total, currency, status.",
]


def random_invoice(rng: random.Random) -> dict:
    return {
        "vendor": rng.choice(VENDORS),
        "total": rng.randint(10, 999),
        "currency": None,  # set by the amount style the note uses
        "status": rng.choice(list(STATUS_PHRASES)),
    }


def invoice_note(rng: random.Random, facts: dict) -> str:
    """The note for `facts`; sets `facts["currency"]` from the amount style it picks."""
    style, facts["currency"] = rng.choice(AMOUNT_STYLES)
    year, month, day = rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)
    date = rng.choice([f"{MONTHS[month - 1]} {day}, {year}", f"{day} {MONTHS[month - 1]} {year}", f"{year}-{month:02d}-{day:02d}"])
    return rng.choice(TEMPLATES).format(
        vendor=facts["vendor"],
        amount=style.format(facts["total"]),
        date=date,
        status=rng.choice(STATUS_PHRASES[facts["status"]]),
    )


def invoice_json(facts: dict) -> str:
    """The answer: compact JSON, keys in the order of KEYS, the total a number."""
    return json.dumps({key: facts[key] for key in KEYS}, separators=(",", ":"))


def sft_rows(n: int, seed: int) -> list[dict[str, str]]:
    """`n` alpaca rows ({"instruction", "input", "output"}) with distinct answers, from `seed`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n:
        facts = random_invoice(rng)
        note = invoice_note(rng, facts)
        answer = invoice_json(facts)
        if answer in seen:
            continue
        seen.add(answer)
        rows.append({"instruction": rng.choice(INSTRUCTIONS), "input": note, "output": answer})
    return rows


def ledger_line(facts: dict) -> str:
    return " ".join(f"{key}={facts[key]}" for key in KEYS)


def shipment_json(rng: random.Random) -> str:
    """JSON with other keys than the task's, so the base knows JSON syntax but not the schema."""
    record = {
        "carrier": rng.choice(VENDORS),
        "parcels": rng.randint(1, 999),
        "weight": rng.choice(["light", "heavy", "bulky"]),
        "shipped": f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }
    return json.dumps(record, separators=(",", ":"))


def pretrain_corpus(n_docs: int, seed: int) -> Iterator[str]:
    """In-domain documents for the tiny base: 75% a note plus its ledger line, 20% a shipment
    record, 5% a glossary sentence."""
    rng = random.Random(seed)
    for _ in range(n_docs):
        draw = rng.random()
        if draw < 0.75:
            facts = random_invoice(rng)
            note = invoice_note(rng, facts)
            yield f"{note}\n{ledger_line(facts)}"
        elif draw < 0.95:
            yield shipment_json(rng)
        else:
            yield rng.choice(GLOSSARY)


def write_jsonl(rows: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="alpaca JSONL file to write")
    parser.add_argument("--rows", type=int, default=SHIPPED_ROWS)
    parser.add_argument("--seed", type=int, default=SHIPPED_SEED)
    args = parser.parse_args(argv)
    rows = sft_rows(args.rows, args.seed)
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
