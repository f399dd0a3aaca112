"""Output cache: content-addressed keys, atomic writes, verified reads, and its use by experts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experts.diffusers.cache import CachedExpert, OutputCache, cache_key
from poser_env.core.expert import Expert, ExpertOutput
from poser_env.core.feedback import Detection

sys.path.insert(0, str(Path(__file__).parent))

IMG = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


def test_key_covers_every_input_and_ignores_param_order() -> None:
    base = cache_key("e", "generate: a cup", IMG, 1, {"steps": 2, "g": 7.5})
    assert len(base) == 64 and base == cache_key("e", "generate: a cup", IMG.copy(), 1, {"g": 7.5, "steps": 2})
    other = IMG.copy()
    other[0, 0, 0] ^= 1
    variants = [
        cache_key("f", "generate: a cup", IMG, 1, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a mug", IMG, 1, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a cup", other, 1, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a cup", IMG.reshape(5, 4, 3), 1, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a cup", None, 1, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a cup", IMG, 2, {"steps": 2, "g": 7.5}),
        cache_key("e", "generate: a cup", IMG, 1, {"steps": 3, "g": 7.5}),
        cache_key("e", "generate: a cup", IMG, 1, {"steps": 2}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_roundtrip_and_counters(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    key = cache_key("e", "c", None, 0)
    assert cache.get(key) is None and key not in cache
    cache.put(key, IMG, {"model": "m", "shape": (1, 2)})
    hit = cache.get(key)
    assert hit is not None and hit.image.tobytes() == IMG.tobytes() and hit.image.shape == IMG.shape
    assert hit.metadata["model"] == "m" and hit.metadata["shape"] == [1, 2]
    assert (cache.hits, cache.misses, cache.writes, len(cache)) == (1, 1, 1, 1)
    assert not list(tmp_path.rglob("*.tmp"))  # nothing left behind by the atomic write
    assert cache.clear() == 1 and len(cache) == 0


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "garbage", "bad_header", "other_key"])
def test_corrupt_entry_is_discarded(tmp_path: Path, damage: str) -> None:
    cache = OutputCache(tmp_path)
    key = cache_key("e", "c", None, 0)
    path = cache.put(key, IMG)
    raw = bytearray(path.read_bytes())
    if damage == "flip_payload":
        raw[-1] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:-7]
    elif damage == "garbage":
        raw = bytearray(b"not a cache file at all")
    elif damage == "bad_header":
        raw = bytearray(raw.replace(b'"shape"', b'"shapo"'))
    else:  # a valid entry stored under the wrong name
        other = cache_key("e", "c", None, 1)
        raw = bytearray(cache.put(other, IMG).read_bytes())
    path.write_bytes(bytes(raw))
    assert cache.get(key) is None
    assert cache.corrupt == 1 and not path.exists()


def test_failed_write_leaves_old_entry_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = OutputCache(tmp_path)
    key = cache_key("e", "c", None, 0)
    cache.put(key, IMG)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.put(key, np.zeros_like(IMG))
    monkeypatch.undo()
    hit = cache.get(key)
    assert hit is not None and hit.image.tobytes() == IMG.tobytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_arguments(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    with pytest.raises(ValueError, match="key='abc'"):
        cache.get("abc")
    with pytest.raises(ValueError, match="image"):
        cache.put(cache_key("e", "c", None, 0), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="root=''"):
        OutputCache("")
    with pytest.raises(ValueError, match="expert="):
        CachedExpert("nope", tmp_path)  # type: ignore[arg-type]


class Seeded(Expert):
    name = "seeded"

    def __init__(self) -> None:
        self.calls = 0

    def _generate(self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
                  detections: Sequence[Detection], **params: Any) -> ExpertOutput:
        self.calls += 1
        rng = np.random.default_rng([seed, len(command), len(detections)])
        return ExpertOutput(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), seed, metadata={"n": self.calls})


def test_cached_expert_wrapper(tmp_path: Path) -> None:
    inner = Seeded()
    ex = CachedExpert(inner, tmp_path)
    a = ex("generate: a cup", seed=3)
    b = ex("generate: a cup", seed=3)
    assert inner.calls == 1 and a.image.tobytes() == b.image.tobytes()
    assert (a.metadata["cache"], b.metadata["cache"]) == ("miss", "hit")
    ex("generate: a cup", seed=4)
    ex("generate: a cup", seed=3, detections=(Detection("cup", (0, 0, 2, 2)),))
    assert inner.calls == 3 and ex.name == "seeded"


# ---------------------------------------------------------------------- with a diffusers expert
@pytest.fixture(scope="module")
def tiny_expert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("diffusers")
    from experts.diffusers import load_diffusers_experts
    from experts.testing import save_tiny_pipelines, torch_threads, write_tiny_registry

    root = tmp_path_factory.mktemp("tiny_cache")
    with torch_threads(1):
        reg = write_tiny_registry(root / "registry.toml", save_tiny_pipelines(root, kinds=("text-to-image",)))
        (ex,) = load_diffusers_experts(reg, ["tiny-t2i"], local_files_only=True, cache_dir=root / "cache")
        yield ex


def test_diffusers_expert_uses_the_cache(tiny_expert: Any) -> None:
    ex = tiny_expert
    calls = ex.calls
    first = ex("generate: a red cup", seed=5)
    second = ex("generate: a red cup", seed=5)
    assert ex.calls == calls + 1
    assert (first.metadata["cache"], second.metadata["cache"]) == ("miss", "hit")
    assert first.image.tobytes() == second.image.tobytes()
    assert ex("generate: a red cup", seed=5, steps=1).metadata["cache"] == "miss"  # parameters are in the key
    # a corrupt entry is discarded and recomputed to the same image
    path = ex.cache.path(first.metadata["cache_key"])
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x55
    path.write_bytes(bytes(raw))
    third = ex("generate: a red cup", seed=5)
    assert third.metadata["cache"] == "miss" and third.image.tobytes() == first.image.tobytes()
    assert ex.cache.corrupt >= 1 and ex("generate: a red cup", seed=5).metadata["cache"] == "hit"


def test_batches_only_compute_misses(tiny_expert: Any) -> None:
    from experts.diffusers import batch_call

    ex = tiny_expert
    ex("generate: a blue dog", seed=1)
    calls = ex.calls
    outs = batch_call(ex, [("generate: a blue dog", None, 1), ("generate: a blue dog", None, 2)])
    assert ex.calls == calls + 1
    assert [o.metadata["cache"] for o in outs] == ["hit", "miss"]
    assert "batch_size" not in outs[0].metadata and outs[1].metadata["batch_size"] == 1


def test_cache_and_expert_pickle(tmp_path: Path) -> None:
    import pickle

    cache = OutputCache(tmp_path)
    key = cache_key("e", "c", None, 0)
    cache.put(key, IMG)
    copy = pickle.loads(pickle.dumps(cache))
    hit = copy.get(key)
    assert hit is not None and hit.image.tobytes() == IMG.tobytes()
    wrapped = pickle.loads(pickle.dumps(CachedExpert(Seeded(), cache)))
    assert wrapped("generate: x", seed=1).image.shape == (8, 8, 3)


# ---------------------------------------------------------------------- keys cover everything (issue 19)
@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pytest.importorskip("diffusers")
    from experts.diffusers import DiffusersExpert
    from experts.testing import save_tiny_pipelines, torch_threads

    with torch_threads(1):
        folder = save_tiny_pipelines(tmp_path / "p", kinds=("text-to-image",))["text-to-image"]

        def make(**kw: Any) -> Any:
            args = {"steps": 2, "width": 32, "height": 32, "local_files_only": True, "cache": tmp_path / "cache",
                    "name": "tiny", "card": {"vram_gb": 1.0}, **kw}
            return DiffusersExpert(str(folder), "text-to-image", **args)

        yield {"make": make, "folder": folder, "root": tmp_path}


def test_replaced_weights_changed_card_and_changed_size_each_miss(fresh: dict[str, Any]) -> None:
    from experts.testing import save_tiny_pipelines, torch_threads

    make = fresh["make"]
    with torch_threads(1):
        first = make()("generate: a cup", seed=1)
        assert first.metadata["cache"] == "miss" and make()("generate: a cup", seed=1).metadata["cache"] == "hit"
        assert make(card={"vram_gb": 2.0})("generate: a cup", seed=1).metadata["cache"] == "miss"  # changed card
        bigger = make(width=48, height=48)("generate: a cup", seed=1)  # changed size under the same name
        assert bigger.metadata["cache"] == "miss" and bigger.image.shape == (48, 48, 3)
        # the weights in the folder are replaced (other random weights saved over them): the old image is not served
        other = save_tiny_pipelines(fresh["root"] / "other", kinds=("text-to-image",), seed=9)["text-to-image"]
        import shutil

        shutil.rmtree(fresh["folder"])
        shutil.copytree(other, fresh["folder"])
        from experts.diffusers import ResidencyManager

        replaced = make(manager=ResidencyManager("cpu"))("generate: a cup", seed=1)  # a fresh process would load anew
        assert replaced.metadata["cache"] == "miss" and replaced.image.tobytes() != first.image.tobytes()


def test_key_covers_variant_revision_load_kwargs_and_generator_device(fresh: dict[str, Any]) -> None:
    base = fresh["make"]().fingerprint()
    for kw in ({"variant": "fp16"}, {"revision": "abc"}, {"load_kwargs": {"use_safetensors": True}},
               {"generator_device": "cpu"}, {"call_kwargs": {"eta": 0.5}}, {"prompt_template": "a photo, {instruction}"}):
        assert fresh["make"](**kw).fingerprint() != base, kw


def test_cached_expert_keys_on_settings_not_only_the_name(tmp_path: Path) -> None:
    class Sized(Expert):
        name = "sized"

        def __init__(self, size: int) -> None:
            self.size = size

        def _generate(self, command, image, *, seed, state, detections, **params):  # type: ignore[override]
            return ExpertOutput(np.full((self.size, self.size, 3), seed % 256, dtype=np.uint8), seed)

    cache = OutputCache(tmp_path)
    assert CachedExpert(Sized(256), cache)("generate: a cup", seed=1).image.shape == (256, 256, 3)
    small = CachedExpert(Sized(128), cache)("generate: a cup", seed=1)
    assert small.metadata["cache"] == "miss" and small.image.shape == (128, 128, 3)


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_failed_cache_write_warns_and_returns_the_image(fresh: dict[str, Any], fault: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    from experts.diffusers import ExpertRequest
    from experts.testing import torch_threads

    def fail(*a: Any, **k: Any) -> Any:
        if fault == "disk-full":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    ex = fresh["make"]()
    with torch_threads(1), pytest.warns(RuntimeWarning, match="computed image is returned uncached"):
        out = ex("generate: a cup", seed=3)
        batch = ex.generate_many([ExpertRequest("generate: a cup", seed=s) for s in (4, 5, 6)])
    assert out.image.shape == (32, 32, 3) and out.metadata["cache"] == "write-failed"
    assert len(batch) == 3 and all(o.metadata["cache"] == "write-failed" for o in batch)  # the batch is kept
    assert ex.cache.write_errors == 4
    wrapped = CachedExpert(fresh["make"](cache=None), ex.cache)
    with pytest.warns(RuntimeWarning, match="uncached"):
        assert wrapped("generate: a cup", seed=7).metadata["cache"] == "write-failed"
