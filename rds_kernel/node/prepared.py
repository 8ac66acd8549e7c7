"""The node's cache of prepared queries, bounded by an estimate of their memory.

Preparing a query (compile, calibrate, verify) takes milliseconds; a scientist who previews a
query and then releases it, or repeats it, should not pay that twice. But a prepared query holds
OpenDP's measurement and polars' plan in native memory — megabytes for one grouping by
thousands of public keys — so the cache is bounded by bytes, not by a count of entries: a count
let 300 large previews keep ~400 MB.

The size of an entry cannot be read off native memory; :func:`weight` estimates it from what
makes it large (the public key frame, held by the plan and for decoding, and the plan's
expressions, which grow with the spec), generously.

>>> cache = PreparedCache(max_bytes=1_000)
>>> cache.put("a", "A", 600); cache.put("b", "B", 600)
>>> cache.get("a") is None, cache.get("b")
(True, 'B')
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from rds_kernel.dp import PreparedQuery

__all__ = ["PreparedCache", "weight"]

K = TypeVar("K")
V = TypeVar("V")

_BASE = 512 * 1024  # a measurement and a plan, however small the query
_PER_KEY_BYTE = 8  # the key frame's own bytes, held in the plan and for decoding
_PER_SPEC_BYTE = 256  # expressions built from the spec, for each byte of its JSON


def weight(prepared: PreparedQuery, spec_bytes: int) -> int:
    """A generous estimate of the memory one prepared query holds, in bytes."""
    keys = prepared.compiled.keys
    key_bytes = 0 if keys is None else int(keys.estimated_size())
    return _BASE + _PER_KEY_BYTE * key_bytes + _PER_SPEC_BYTE * spec_bytes


class PreparedCache(Generic[K, V]):
    """A thread-safe LRU cache whose entries carry a weight; evicts beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Keep ``value`` unless it alone is larger than the whole cache."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _key, (_value, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
