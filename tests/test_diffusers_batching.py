"""Batching: several requests as one pipeline call give the images unbatched calls give (tiny pipelines)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

from experts.diffusers import BatchedExpert, ExpertRequest, as_request, batch_call, load_diffusers_experts
from poser_env.core.expert import Expert, ExpertError, ExpertOutput
from poser_env.core.feedback import Detection

sys.path.insert(0, str(Path(__file__).parent))
from experts.testing import save_tiny_pipelines, torch_threads, write_tiny_registry


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tiny_batching")
    with torch_threads(1):
        reg = write_tiny_registry(root / "registry.toml", save_tiny_pipelines(root))
        yield {e.name: e for e in load_diffusers_experts(reg, local_files_only=True, max_batch=8)}


def assert_same_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float32 summation order in batched matmuls: at most 1 level, in under 0.5% of values."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005


def _canvases(expert: Any, n: int) -> list[np.ndarray]:
    return [o.image for o in batch_call(expert, [(f"generate: object {i}", None, 100 + i) for i in range(n)])]


@pytest.mark.parametrize("name", ["tiny-t2i", "tiny-img2img", "tiny-ip2p", "tiny-inpaint"])
def test_batch_equals_unbatched(experts: dict[str, Any], name: str) -> None:
    ex = experts[name]
    images = [None] * 4 if ex.kind == "text-to-image" else _canvases(experts["tiny-t2i"], 4)
    dets = (Detection("clock", (4, 4, 20, 20)),)
    reqs = [(f"recolor: make the clock colour {i}", images[i], 10 + i, dets) for i in range(4)]
    calls = ex.calls
    batched = batch_call(ex, reqs)
    assert ex.calls == calls + 1  # one pipeline call for four images
    assert all(o.metadata["batch_size"] == 4 for o in batched)
    for (cmd, img, seed, d), out in zip(reqs, batched):
        single = ex(cmd, img, seed=seed, detections=d)
        assert single.metadata["batch_size"] == 1
        assert_same_images(out.image, single.image)
        assert out.seed == seed
    # batch composition does not matter: the same request in another batch gives the same image
    again = batch_call(ex, [reqs[2], reqs[0]])
    assert again[0].image.tobytes() == batch_call(ex, [reqs[2], reqs[1]])[0].image.tobytes()
    assert_same_images(again[1].image, batched[0].image)


def test_mixed_settings_split_into_groups_and_chunks(experts: dict[str, Any]) -> None:
    ex = experts["tiny-t2i"]
    calls = ex.calls
    reqs = [ExpertRequest("generate: a cup", None, i, (), {"steps": 1 + i % 2}) for i in range(6)]
    outs = batch_call(ex, reqs)
    assert ex.calls == calls + 2 and [o.metadata["steps"] for o in outs] == [1, 2, 1, 2, 1, 2]
    ex.max_batch = 2
    try:
        calls = ex.calls
        batch_call(ex, [("generate: a cup", None, i) for i in range(5)])
        assert ex.calls == calls + 3
    finally:
        ex.max_batch = 8


def test_batched_expert_collects_calls_from_threads(experts: dict[str, Any]) -> None:
    ex = experts["tiny-t2i"]
    shared = BatchedExpert(ex, max_batch=4, max_wait_s=30.0)  # waits until four requests arrived
    results: dict[int, ExpertOutput] = {}

    def env(i: int) -> None:
        results[i] = shared(f"generate: thing {i}", seed=i)

    threads = [threading.Thread(target=env, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    shared.close()
    assert shared.batch_sizes == [4]
    for i in range(4):
        assert results[i].metadata["batch_size"] == 4
        assert_same_images(results[i].image, ex(f"generate: thing {i}", seed=i).image)
    with pytest.raises(ExpertError, match="closed"):
        shared("generate: x", seed=0)


def test_batched_expert_gives_each_caller_its_own_error(experts: dict[str, Any]) -> None:
    shared = BatchedExpert(experts["tiny-t2i"], max_batch=2, max_wait_s=30.0)
    errors: list[BaseException] = []
    outs: list[ExpertOutput] = []

    def good() -> None:
        outs.append(shared("generate: fine", seed=1))

    def bad() -> None:
        try:
            shared("generate: bad", seed=2, steps=0)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=good), threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    shared.close()
    assert len(outs) == 1 and outs[0].image.shape == (32, 32, 3)
    assert len(errors) == 1 and "steps=0" in str(errors[0])


class Counter(Expert):
    """A plain expert without batching support."""

    name = "counter"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def _generate(self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
                  detections: Sequence[Detection], **params: Any) -> ExpertOutput:
        self.seen.append(seed)
        if seed == 13:
            raise ExpertError("unlucky seed")
        return ExpertOutput(np.full((4, 4, 3), seed, dtype=np.uint8), seed)


def test_batch_call_falls_back_to_one_by_one() -> None:
    ex = Counter()
    outs = batch_call(ex, [("generate: a", None, 1), ("generate: b", None, 13), ("generate: c", None, 3)],
                      return_exceptions=True)
    assert ex.seen == [1, 13, 3]
    assert isinstance(outs[1], ExpertError) and isinstance(outs[0], ExpertOutput) and outs[2].seed == 3
    with pytest.raises(ExpertError, match="unlucky"):
        batch_call(ex, [("generate: b", None, 13)])


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError, match="request="):
        as_request(("only a command",))
    with pytest.raises(ValueError, match="expert="):
        batch_call("not an expert", [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch=0"):
        BatchedExpert(Counter(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s=-1"):
        BatchedExpert(Counter(), max_wait_s=-1)
