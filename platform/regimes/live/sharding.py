"""Which engine shard holds a symbol: a stable hash of its name.

A symbol's feature windows, filter state and anti-chatter live in exactly one shard, so
every bar of the symbol must reach the same shard, in every process, after every
restart and on every machine. Python's ``hash`` is salted per process; BLAKE2b of the
UTF-8 name is not.

Examples
--------
>>> shard_of("SPY", 4) == shard_of("SPY", 4)
True
>>> sorted({shard_of(f"S{i}", 3) for i in range(50)})
[0, 1, 2]
"""

from __future__ import annotations

import hashlib

import numpy as np

from regimes.errors import BadInputError


def shard_of(symbol: str, shards: int) -> int:
    """The shard (0 .. ``shards`` - 1) that holds ``symbol``."""
    if not isinstance(shards, int) or shards < 1:
        raise BadInputError(f"shards: expected a positive integer, got {shards!r}")
    digest = hashlib.blake2b(str(symbol).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shards_of(symbols, shards: int) -> np.ndarray:
    """:func:`shard_of` of each of ``symbols`` (an int array in their order)."""
    cache: dict[str, int] = {}
    out = np.empty(len(symbols), dtype=np.int64)
    for i, symbol in enumerate(symbols):
        shard = cache.get(symbol)
        if shard is None:
            shard = cache[symbol] = shard_of(symbol, shards)
        out[i] = shard
    return out
