"""Content-addressed on-disk cache of expert outputs.

A key is the SHA-256 of the expert name, the command, the input image (shape, dtype and bytes), the seed
and the parameters (canonical JSON). An entry is one file ``<root>/<key[:2]>/<key>.img``:

    b"POSERCACHE1\\n" + <JSON header line> + b"\\n" + <raw HxWx3 uint8 bytes>

whose header holds the shape, the SHA-256 of the payload and the call's metadata. Writes go to a temporary
file in the same folder and are moved into place with ``os.replace`` (atomic: a reader sees the old entry
or the whole new one). Reads re-hash the payload; an entry that fails (truncated, edited, wrong shape) is
deleted and reported as a miss, so the caller recomputes it.

The cache needs no torch; :class:`CachedExpert` wraps any :class:`poser_env.core.expert.Expert` (SceneSim too).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from poser_env.core.expert import Expert, ExpertOutput
from poser_env.core.image import check_image

if TYPE_CHECKING:
    from poser_env.core.feedback import Detection

__all__ = ["CacheEntry", "CachedExpert", "OutputCache", "cache_key", "expert_fingerprint"]

_MAGIC = b"POSERCACHE1\n"


def _canonical(obj: Any) -> Any:
    """JSON-able canonical form (tuples -> lists, numpy scalars -> Python, arrays -> digest, others -> repr)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):  # sorted: a set's iteration order follows the salted str hash
        return sorted((_canonical(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True, default=repr))
    if isinstance(obj, np.ndarray):
        return {"ndarray": list(obj.shape), "dtype": str(obj.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def cache_key(
    expert: str, command: str, image: np.ndarray | None, seed: int, params: Mapping[str, Any] | None = None
) -> str:
    """SHA-256 hex digest of (expert name, command, input image bytes and shape, seed, parameters).

    Args:
        expert: Expert name (include the model id and dtype when they can change under one name).
        command: The command text.
        image: Input image (any array; its shape, dtype and bytes count) or None.
        seed: Seed of the call.
        params: Parameters that change the output (steps, guidance, size, mask...); order does not matter.
    """
    h = hashlib.sha256()
    head = {"expert": expert, "command": command, "seed": int(seed), "params": _canonical(dict(params or {}))}
    if image is not None:
        arr = np.ascontiguousarray(image)
        head["image"] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    if image is not None:
        h.update(b"\0image\0")
        h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A verified cache entry: the image (HxWx3 uint8) and the metadata stored with it."""

    image: np.ndarray
    metadata: Mapping[str, Any]


class OutputCache:
    """Content-addressed image cache in a folder.

    Args:
        root: Folder of the cache (created if missing).

    Attributes:
        hits, misses, corrupt, writes, write_errors: Counters since construction.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)) or not str(root).strip():
            raise ValueError(f"root={root!r} must be a folder path for the cache, e.g. '~/.cache/image-poser'.")
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.writes = 0
        self.write_errors = 0
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        """File of ``key`` (a 64-hex-digit SHA-256)."""
        if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"key={key!r} must be a 64-character lowercase hex SHA-256 from cache_key(...).")
        return self.root / key[:2] / f"{key}.img"

    def get(self, key: str) -> CacheEntry | None:
        """The verified entry of ``key``, or None (absent, or corrupt: then the file is deleted)."""
        p = self.path(key)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        entry = self._decode(raw, key)
        with self._lock:
            if entry is None:
                self.corrupt += 1
                self.misses += 1
            else:
                self.hits += 1
        if entry is None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return entry

    def put(self, key: str, image: np.ndarray, metadata: Mapping[str, Any] | None = None) -> Path:
        """Store ``image`` (HxWx3 uint8) under ``key`` atomically; returns the file path."""
        check_image(image)
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = np.ascontiguousarray(image).tobytes()
        header = {
            "key": key, "shape": list(image.shape), "dtype": "uint8",
            "sha256": hashlib.sha256(payload).hexdigest(), "metadata": _canonical(dict(metadata or {})),
            "written": time.time(),
        }
        data = _MAGIC + json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with self._lock:
            self.writes += 1
        return p

    def try_put(self, key: str, image: np.ndarray, metadata: Mapping[str, Any] | None = None) -> Path | None:
        """:meth:`put` that never loses the caller's image: a failed write (disk full, read-only folder, any
        ``OSError``) warns once per call with the reason and the fix, counts ``write_errors`` and returns None."""
        try:
            return self.put(key, image, metadata)
        except OSError as exc:
            with self._lock:
                self.write_errors += 1
            warnings.warn(
                f"could not write the output cache entry {key[:12]}... under {str(self.root)!r} "
                f"({type(exc).__name__}: {exc}); the computed image is returned uncached. Free disk space, make the "
                "folder writable, or pass another cache_dir.", RuntimeWarning, stacklevel=2)
            return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.path(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.img"))

    def clear(self) -> int:
        """Delete every entry; returns how many."""
        n = 0
        for p in self.root.glob("??/*.img"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    @staticmethod
    def _decode(raw: bytes, key: str) -> CacheEntry | None:
        if not raw.startswith(_MAGIC):
            return None
        nl = raw.find(b"\n", len(_MAGIC))
        if nl < 0:
            return None
        try:
            header = json.loads(raw[len(_MAGIC):nl].decode("utf-8"))
            shape = tuple(int(v) for v in header["shape"])
            digest = str(header["sha256"])
        except (ValueError, KeyError, TypeError):
            return None
        payload = raw[nl + 1:]
        if (header.get("key") != key or len(shape) != 3 or shape[2] != 3
                or len(payload) != int(np.prod(shape)) or hashlib.sha256(payload).hexdigest() != digest):
            return None
        image = np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy()
        return CacheEntry(image, header.get("metadata", {}))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OutputCache(root={str(self.root)!r}, hits={self.hits}, misses={self.misses}, corrupt={self.corrupt})"


class CachedExpert(Expert):
    """Wrap any expert with an :class:`OutputCache`: a call already made returns the stored image.

    The key covers the wrapped expert's identity (:func:`expert_fingerprint`: class, name, kind, ops, cost and
    its ``fingerprint()`` - weights identity, size, card... - or its public settings), the command, the input
    image, the seed, the detections (labels and boxes) and ``params``. Only use it with deterministic experts
    (same inputs -> same image). ``state`` is passed through but not cached: a hit returns ``state=None``
    unless the expert's output had none anyway, so do not wrap SceneSim experts whose ``state`` matters.
    A failed cache write warns and returns the computed image (:meth:`OutputCache.try_put`).
    """

    def __init__(self, expert: Expert, cache: OutputCache | str | os.PathLike[str]) -> None:
        if not isinstance(expert, Expert):
            raise ValueError(f"expert={expert!r} must be an poser_env.core.expert.Expert.")
        self.expert = expert
        self.cache = cache if isinstance(cache, OutputCache) else OutputCache(cache)
        self.name = expert.name
        self.kind = expert.kind
        self.ops = expert.ops
        self.cost = expert.cost

    def _generate(
        self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
        detections: Sequence[Detection], **params: Any,
    ) -> ExpertOutput:
        t0 = time.perf_counter()
        dets = [(d.label, tuple(float(v) for v in d.box)) for d in detections]
        key = cache_key(self.expert.name, command, image, seed,
                        {**params, "_detections": dets, "_expert": expert_fingerprint(self.expert)})
        hit = self.cache.get(key)
        if hit is not None:
            meta = {**dict(hit.metadata), "cache": "hit", "cache_key": key}
            return ExpertOutput(hit.image, seed, time.perf_counter() - t0, meta)
        out = self.expert(command, image, seed=seed, state=state, detections=detections, **params)
        written = self.cache.try_put(key, out.image, out.metadata)
        meta = {**dict(out.metadata), "cache": "miss" if written is not None else "write-failed", "cache_key": key}
        return ExpertOutput(out.image, out.seed, out.elapsed, meta, out.state)


def expert_fingerprint(expert: Expert) -> dict[str, Any]:
    """What identifies ``expert``'s outputs beyond the call's arguments, for cache keys.

    Its class (module and qualified name), name, kind, sorted ops and cost, plus ``expert.fingerprint()`` when
    it has one (diffusers experts: weights identity, dtype, size, card...) or else every constructor argument
    kept as a same-named attribute holding a plain value (numbers, strings, lists, dicts of those - e.g.
    ``width``, ``card``); counters and other state set outside the constructor's arguments do not count.
    """
    fp: dict[str, Any] = {
        "class": f"{type(expert).__module__}.{type(expert).__qualname__}", "name": expert.name,
        "kind": expert.kind, "ops": sorted(expert.ops), "cost": float(expert.cost),
    }
    own = getattr(expert, "fingerprint", None)
    if callable(own):
        fp["settings"] = own()
    else:
        try:
            args = set(inspect.signature(type(expert).__init__).parameters) - {"self"}
        except (TypeError, ValueError):
            args = set()
        fp["settings"] = {k: v for k, v in sorted(vars(expert).items())
                          if k in args and not k.startswith("_") and _plain(v)}
    return fp


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, np.generic)):
        return True
    if isinstance(v, (list, tuple, frozenset, set)):
        return all(_plain(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False
