"""PII/PHI redaction, fully offline: pattern recognizers with checksums, in the presidio style.

Each recognizer is a regex for candidates plus a validator (Luhn for cards, mod-97 for IBANs, the
GB 11643 checksum for Chinese resident IDs, `ipaddress` for IPs, the SSA rules for SSNs), as in
presidio-analyzer's `PatternRecognizer`. We do not depend on presidio-analyzer itself: it
requires spaCy (with thinc, blis) and tldextract, and its default engine loads a spaCy model,
which breaks the light, offline core install. Matches never rely on `\\b` or `\\w` boundaries, so they
work inside Chinese text, where CJK characters count as word characters.

Recipe keys (`data.pii`): `enabled`, `mode` (`mask`: typed placeholders like `<EMAIL>`;
`pseudonymize`: a stable fake value per original, keyed by `seed`), `entities` (which
recognizers run).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re

ENTITIES = ("URL_CREDENTIALS", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "CN_RESIDENT_ID",
            "PHONE", "IP_ADDRESS")


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|2|4[4-9])|35")


def _card(text: str) -> bool:
    """Luhn-valid, 13-19 digits, and an issuer prefix (Visa, Mastercard, Amex, Discover, JCB,
    Diners, UnionPay): bare long numbers in arithmetic mostly fail the prefix test."""
    digits = re.sub(r"[ -]", "", text)
    return (13 <= len(digits) <= 19 and len(set(digits)) > 1 and _CARD_PREFIX.match(digits) is not None
            and _luhn(digits))


def _iban(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _cn_id(text: str) -> bool:
    s = text.upper()
    month, day = int(s[10:12]), int(s[12:14])
    if not (1 <= month <= 12 and 1 <= day <= 31 and s[6:8] in ("18", "19", "20")):
        return False
    check = "10X98765432"[sum(int(c) * w for c, w in zip(s[:17], _CN_WEIGHTS)) % 11]
    return s[17] == check


def _phone(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 8 <= len(digits) <= 15 and len(set(digits)) > 2


def _ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version == 6:  # "::" and "a::b" appear in code; ask for three hex groups
        return sum(1 for part in text.split(":") if part) >= 3
    return True


# (entity, pattern, validator); earlier entries win over later ones on overlapping spans of equal length.
RECOGNIZERS = (
    ("URL_CREDENTIALS", r"[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s:/@]+:[^\s/@]+@[^\s/?#]+", None),
    ("EMAIL", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}"
              r"(?![A-Za-z0-9-])", None),
    ("IBAN", r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", _iban),
    ("CREDIT_CARD", r"(?<![\d-])(?<!\d\.)\d(?:[ -]?\d){12,18}(?!\d|\.\d)", _card),
    ("US_SSN", r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-]|\.\d)", _ssn),
    ("CN_RESIDENT_ID", r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])\d{2}\d{3}[\dXx]"
                       r"(?![0-9A-Za-z])", _cn_id),
    ("PHONE", r"(?<![0-9A-Za-z_+=*/-])(?:(?:\+|00)86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"            # CN mobile
              r"|(?<![0-9A-Za-z_+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\d])"                    # +CC ...
              r"|(?<![0-9A-Za-z_.])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d|\.\d)"                        # NANP
              r"|(?<![0-9A-Za-z_.])0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}(?!\d|\.\d)", _phone),              # national
    ("IP_ADDRESS", r"(?<![0-9A-Za-z_.:])(?:\d{1,3}\.){3}\d{1,3}(?![0-9A-Za-z_]|\.\d)", _ip),
    ("IP_ADDRESS", r"(?<![0-9A-Za-z_:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z_:])", _ip),
)
_COMPILED = [(name, re.compile(pattern), check) for name, pattern, check in RECOGNIZERS]
# Cheap pre-checks: a recognizer runs only when its gate matches somewhere in the text.
_NUMBER = re.compile(r"\d[\d .()-]{5,}\d")
_GATES = {0: re.compile("@"), 1: re.compile("@"), 2: _NUMBER, 3: _NUMBER, 4: _NUMBER, 5: _NUMBER, 6: _NUMBER,
          7: re.compile(r"\d\.\d"), 8: re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f:]")}


@functools.lru_cache(maxsize=32)
def _active(entities: tuple) -> tuple:
    """`(rank, name, pattern, check)` of the recognizers for these entity names."""
    wanted = set(entities)
    return tuple((rank, *r) for rank, r in enumerate(_COMPILED) if r[0] in wanted)


def find(text: str, entities=ENTITIES) -> list[tuple[int, int, str]]:
    """Non-overlapping `(start, end, entity)` spans, longest first, then recognizer order."""
    found = []
    gates: dict = {}
    for rank, name, pattern, check in _active(entities if isinstance(entities, tuple) else tuple(entities)):
        gate = _GATES[rank]
        if gate not in gates:
            gates[gate] = gate.search(text) is not None
        if not gates[gate]:
            continue
        for m in pattern.finditer(text):
            if check is None or check(m.group()):
                found.append((m.start(), m.end(), rank, name))
    if not found:
        return []
    found.sort(key=lambda f: (f[0], -(f[1] - f[0]), f[2]))
    kept, end = [], -1
    for start, stop, _rank, name in found:
        if start >= end:
            kept.append((start, stop, name))
            end = stop
    return kept


class Redactor:
    """Replaces PII in strings and counts replacements per entity type."""

    def __init__(self, mode: str = "mask", entities=ENTITIES, seed: int = 0):
        self.mode, self.entities, self.seed = mode, tuple(entities), seed
        self.counts: dict[str, int] = {}
        self.fakes: set[str] = set()

    def __call__(self, text: str) -> str:
        spans = find(text, self.entities)
        if not spans:
            return text
        parts, last = [], 0
        for start, end, name in spans:
            parts += [text[last:start], self._replacement(name, text[start:end])]
            self.counts[name] = self.counts.get(name, 0) + 1
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def _replacement(self, name: str, original: str) -> str:
        if self.mode == "mask":
            return f"<{name}>"
        fake = pseudonym(name, original, self.seed)
        self.fakes.add(fake)
        return fake


def pseudonym(name: str, original: str, seed: int) -> str:
    """A stable fake of the same type: same original and seed, same fake. Fakes fail the checksums
    (or use reserved ranges) so they are never mistaken for real values."""
    h = hashlib.sha256(f"{seed}:{name}:{original}".encode()).hexdigest()
    n = int(h[:12], 16)
    digits = str(n).zfill(15)
    if name == "EMAIL":
        return f"user{h[:8]}@example.com"
    if name == "PHONE":
        return f"+1-555-01{digits[:2]}"
    if name == "CREDIT_CARD":
        return f"XXXX-XXXX-XXXX-{digits[:4]}"
    if name == "IBAN":
        return f"XX00 TEST {digits[:4]} {digits[4:8]}"
    if name == "US_SSN":
        return f"000-00-{digits[:4]}"
    if name == "CN_RESIDENT_ID":
        return f"000000-{digits[:8]}-XXXX"
    if name == "IP_ADDRESS":
        return f"192.0.2.{n % 254 + 1}" if ":" not in original else f"2001:db8::{h[:4]}"
    if name == "URL_CREDENTIALS":
        return f"https://user:redacted@host{h[:6]}.example"
    return f"<{name}>"


def residual(texts, entities=ENTITIES, fakes=frozenset()) -> dict[str, int]:
    """PII still detectable in `texts` (placeholders and our own fakes excluded): the measured check."""
    counts: dict[str, int] = {}
    entities = tuple(entities)
    for text in texts:
        for start, end, name in find(text, entities):
            if text[start:end] not in fakes:
                counts[name] = counts.get(name, 0) + 1
    return counts
