"""Exact and near-duplicate removal. The first occurrence is kept.

Exact: sha256 of the row's texts after whitespace and case folding.

Near: MinHash signatures with LSH banding. Shingles are n-grams of *units*, where a unit is one
CJK character or one run of other letters/digits, so Chinese text gets character n-grams and
English word n-grams. Signatures are computed for all rows at once with numpy (a multiply-shift
hash family over 64-bit shingle hashes, blocks of rows in threads); the band/row split is the one
datasketch's `MinHashLSH` picks (minimum false positives plus negatives at the threshold). Candidates that share a band are
verified by their estimated Jaccard similarity (the fraction of equal signature slots).

Recipe keys (`data.dedup`): `exact`, `near`, `threshold` (Jaccard, default 0.9), `num_perm`,
`shingle_size`.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_DOCS_PER_BLOCK = 2000
_SPACE = re.compile(r"\s+")
_POSITION_MULTIPLIERS = np.random.default_rng(12345).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)


def exact_key(texts: list[str]) -> str:
    joined = "\x1f".join(_SPACE.sub(" ", t).strip().lower() for t in texts)
    return hashlib.sha256(joined.encode()).hexdigest()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads 64-bit values (wrapping arithmetic is intended)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=1)
def _categories() -> np.ndarray:
    """Per BMP code point: 0 separator, 1 part of a word, 2 a unit on its own (CJK, kana, hangul)."""
    table = np.zeros(0x10000, dtype=np.uint8)
    for cp in range(0x10000):
        ch = chr(cp)
        if ch.isalnum() or ch == "_":
            table[cp] = 2 if _CJK.match(ch) else 1
    return table


def shingle_hashes(docs: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every doc's unit n-grams, concatenated (grouped by doc), and each doc's
    offset into them. All docs are processed at once on their code points."""
    corpus = "\x00".join(d.replace("\x00", " ") for d in docs).lower()
    cp = np.frombuffer(corpus.encode("utf-32-le"), dtype=np.uint32)
    cat = np.where(cp < 0x10000, _categories()[np.minimum(cp, 0xFFFF)], 1).astype(np.uint8)
    doc_of_char = np.cumsum(cp == 0)
    word = cat == 1
    start = (cat == 2) | (word & ~np.concatenate([[False], word[:-1]]))
    keep = cat > 0
    cpm, startm, docm = cp[keep].astype(np.uint64), start[keep], doc_of_char[keep]
    unit_starts = np.flatnonzero(startm)
    unit_index = np.cumsum(startm) - 1
    pos = (np.arange(len(cpm)) - unit_starts[unit_index]) & 63
    with np.errstate(over="ignore"):
        contrib = (cpm + np.uint64(1)) * _POSITION_MULTIPLIERS[pos]
        units = _mix(np.add.reduceat(contrib, unit_starts)) if len(unit_starts) else np.zeros(0, np.uint64)
    unit_doc = docm[unit_starts]
    total = max(len(units) - n + 1, 0)
    h = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * np.uint64(0x100000001B3) + units[k : k + total]
    valid = unit_doc[:total] == unit_doc[n - 1 : n - 1 + total]
    hashes, owners = h[valid], unit_doc[:total][valid]
    counts = np.bincount(owners, minlength=len(docs))
    short = np.flatnonzero(counts == 0)  # fewer than n units: one shingle of the whole doc
    if len(short):
        extra = np.array([int.from_bytes(hashlib.blake2b(docs[i].lower().encode(), digest_size=8).digest(),
                                         "little") for i in short], dtype=np.uint64)
        order = np.argsort(np.concatenate([owners, short]), kind="stable")
        hashes = np.concatenate([hashes, extra])[order]
        counts[short] = 1
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return _mix(hashes), offsets


def signatures(docs: list[str], num_perm: int = 128, n: int = 3, seed: int = 1) -> np.ndarray:
    """MinHash signatures, shape (len(docs), num_perm), uint32."""
    if len(docs) > _DOCS_PER_BLOCK:  # blocks keep the temporaries small; numpy releases the GIL,
        from concurrent.futures import ThreadPoolExecutor  # so blocks run on every core in threads

        from ftrecipes.data.tokenize import cpu_count

        blocks = [docs[i : i + _DOCS_PER_BLOCK] for i in range(0, len(docs), _DOCS_PER_BLOCK)]
        with ThreadPoolExecutor(max_workers=min(cpu_count(), len(blocks))) as pool:
            return np.concatenate(list(pool.map(lambda block: signatures(block, num_perm, n, seed), blocks)))
    hashes, offsets = shingle_hashes(docs, n)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    sig = np.empty((len(docs), num_perm), dtype=np.uint32)
    chunk = max(1, 4_000_000 // num_perm)  # shingles per block: about 32 MB of uint64 per block
    doc = 0
    while doc < len(docs):
        # whole docs whose shingles fit in the block (at least one doc)
        last = int(np.searchsorted(offsets, offsets[doc] + chunk, side="right"))
        last = max(last, doc + 1)
        lo = offsets[doc]
        hi = offsets[last] if last < len(docs) else len(hashes)
        block = hashes[lo:hi]
        vals = np.empty((num_perm, len(block)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.multiply(a[:, None], block[None, :], out=vals)
            vals += b[:, None]
            vals >>= np.uint64(32)
        mins = np.minimum.reduceat(vals, offsets[doc:last] - lo, axis=1)
        sig[doc:last] = mins.T.astype(np.uint32)
        doc = last
    return sig


@functools.lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives at the threshold (equal weights),
    the rule of datasketch's `MinHashLSH` (its scipy `quad` integrals done here with Simpson's rule
    on a fine grid, so the cold import of datasketch and scipy is avoided)."""
    lo, hi = np.linspace(0.0, threshold, 2001), np.linspace(threshold, 1.0, 2001)
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _simpson(1 - (1 - lo ** r) ** b, lo)
            fn = _simpson((1 - hi ** r) ** b, hi)
            if 0.5 * fp + 0.5 * fn < best:
                best, opt = 0.5 * fp + 0.5 * fn, (b, r)
    return opt


def _simpson(y: np.ndarray, x: np.ndarray) -> float:
    h = (x[-1] - x[0]) / (len(x) - 1)
    return float(h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum()))


def near_duplicates(docs: list[str], threshold: float = 0.9, num_perm: int = 128,
                    n: int = 3, protected: int = 0) -> dict[int, int]:
    """`{duplicate index: index of the kept row it repeats}`; earlier rows are kept.

    The first `protected` docs (a separate validation source) are never removed, and a later doc
    that repeats one of them is removed, so near duplicates cannot straddle the split.
    """
    if not docs:
        return {}
    sig = signatures(docs, num_perm, n)
    bands, rows = lsh_params(threshold, num_perm)
    raw = sig.tobytes()
    width = num_perm * 4
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    dupes: dict[int, int] = {}
    for i in range(len(docs)):
        base = i * width
        keys = [raw[base + band * rows * 4: base + (band + 1) * rows * 4] for band in range(bands)]
        match = None
        if i >= protected:
            seen = set()
            for band, key in enumerate(keys):
                for j in buckets[band].get(key, ()):
                    if j not in seen:
                        seen.add(j)
                        if np.count_nonzero(sig[i] == sig[j]) >= threshold * num_perm:
                            match = j
                            break
                if match is not None:
                    break
        if match is not None:
            dupes[i] = match
            continue
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(i)
    return dupes
