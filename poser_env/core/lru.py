"""A small least-recently-used cache (one implementation for the text encoders and the LLM decomposer).

``functools.lru_cache`` wraps a function; these caches key on a text and are shared between objects (env copies),
survive pickling as empty, and report hits and misses, so they are a mapping-like class instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` entries; reading one makes it the most recent, adding beyond ``maxsize`` drops the least
    recent. ``maxsize=0`` disables the cache (nothing is kept).

    Attributes:
        hits: ``get`` calls that found their key.
        misses: ``get`` calls that did not.
    """

    def __init__(self, maxsize: int) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"cache_size={maxsize!r} must be an int >= 0 (0 disables the cache).")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recent), or None."""
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` (the most recent); drop the least recent entries beyond ``maxsize``."""
        if not self.maxsize:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._data.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
