"""Text encoders: the on-disk embedding store, MiniLM's disk cache and batched prefetch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poser_env import encoders
from poser_env.encoders import EmbeddingStore, HashingTextEncoder, MiniLMTextEncoder, minilm_available


def test_store_round_trip_and_shards_never_pickle(tmp_path) -> None:
    store = EmbeddingStore(tmp_path / "m", 4)
    assert store.load() == {}
    v = np.arange(8, dtype=np.float32).reshape(2, 4)
    store.add(["a", "b"], v)
    store.add(["c"], np.ones((1, 4), np.float32))
    got = EmbeddingStore(tmp_path / "m", 4).load()
    assert sorted(got) == ["a", "b", "c"] and np.array_equal(got["b"], v[1])
    metas = sorted((tmp_path / "m").glob("*.json"))
    assert len(metas) == 2 and json.loads(metas[0].read_text()) in (["a", "b"], ["c"])
    for npy in (tmp_path / "m").glob("*.npy"):
        np.load(npy, allow_pickle=False)  # plain arrays only
    # a shard of another size or a broken one is skipped, not a failure
    (tmp_path / "m" / "broken.json").write_text("[not json")
    assert sorted(EmbeddingStore(tmp_path / "m", 4).load()) == ["a", "b", "c"]
    assert EmbeddingStore(tmp_path / "m", 5).load() == {}
    with pytest.raises(ValueError, match="do not match"):
        store.add(["x"], np.ones((2, 4), np.float32))


def test_hashing_prefetch_is_a_noop() -> None:
    enc = HashingTextEncoder(dim=16)
    assert enc.prefetch(["a red cup"]) == 0 and enc.misses == 0


@pytest.mark.skipif(not minilm_available(), reason="MiniLM not installed")
def test_minilm_reads_embeddings_back_from_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(encoders, "_SHARED_CACHES", {})
    monkeypatch.setattr(encoders, "_LOADED_STORES", set())
    enc = MiniLMTextEncoder(cache_dir=tmp_path)
    texts = ["a red cup", "generate: two dogs left of a bench", "done"]
    assert enc.prefetch(texts) == 3 and enc.prefetch(texts) == 0
    first = enc(texts)
    assert enc.misses == 3 and list(tmp_path.rglob("*.npy"))
    # a new process: empty in-memory caches, and the model must not be needed
    monkeypatch.setattr(encoders, "_SHARED_CACHES", {})
    monkeypatch.setattr(encoders, "_LOADED_STORES", set())
    fresh = MiniLMTextEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(fresh, "_load", lambda: (_ for _ in ()).throw(AssertionError("model loaded")))
    assert np.array_equal(fresh(texts), first) and fresh.misses == 0
    # without the disk cache nothing is read or written
    monkeypatch.setattr(encoders, "_SHARED_CACHES", {})
    off = MiniLMTextEncoder(cache_dir=tmp_path / "off", disk_cache=False)
    off(["a red cup"])
    assert not (tmp_path / "off").exists()
