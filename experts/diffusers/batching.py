"""Batching: run the requests of several envs for the same expert as one pipeline call.

Two ways in:

- :func:`batch_call` takes a list of requests (``(command, image, seed)`` tuples or
  :class:`~experts.diffusers.expert.ExpertRequest`) and runs them at once. A
  :class:`~experts.diffusers.expert.DiffusersExpert` groups requests with the same settings into pipeline
  calls of up to ``max_batch`` images, one ``torch.Generator`` per image, so each image is the one an
  unbatched call with the same seed gives (float32 sums inside batched matrix products may be reordered:
  on CPU at most 1 level in a few pixels in a thousand). Any other expert is called once per request.
- :class:`BatchedExpert` wraps an expert for envs that step in threads (one env per thread sharing the
  expert): concurrent calls are collected for up to ``max_wait_s`` (or until ``max_batch`` arrived) and run
  as one :func:`batch_call`; each caller gets its own output or exception.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from experts.diffusers.expert import ExpertRequest
from poser_env.core.expert import Expert, ExpertError, ExpertOutput

if TYPE_CHECKING:
    from poser_env.core.feedback import Detection

__all__ = ["BatchedExpert", "ExpertRequest", "as_request", "batch_call"]


def as_request(item: ExpertRequest | Sequence[Any]) -> ExpertRequest:
    """An :class:`ExpertRequest` from itself or a tuple ``(command, image, seed[, detections[, params]])``."""
    if isinstance(item, ExpertRequest):
        return item
    if isinstance(item, (tuple, list)) and 3 <= len(item) <= 5:
        command, image, seed = item[0], item[1], item[2]
        detections = tuple(item[3]) if len(item) > 3 else ()
        params = dict(item[4]) if len(item) > 4 else {}
        return ExpertRequest(command, image, seed, detections, params)
    raise ValueError(
        f"request={item!r} must be an ExpertRequest or a tuple (command, image, seed[, detections[, params]])."
    )


def batch_call(
    expert: Expert, requests: Sequence[ExpertRequest | Sequence[Any]], *, return_exceptions: bool = False
) -> list[ExpertOutput | ExpertError]:
    """Run ``requests`` on ``expert`` as few pipeline calls as possible; one result per request, in order.

    Args:
        expert: Any :class:`~poser_env.core.expert.Expert`; diffusers experts (anything with ``generate_many``) batch.
        requests: ``ExpertRequest`` objects or ``(command, image, seed[, detections[, params]])`` tuples.
        return_exceptions: Return each request's :class:`ExpertError` in its slot instead of raising the first.

    Raises:
        ValueError: a malformed request (always raised).
        ExpertError: a request failed and ``return_exceptions`` is False.
    """
    if not isinstance(expert, Expert):
        raise ValueError(f"expert={expert!r} must be an poser_env.core.expert.Expert.")
    reqs = [as_request(r) for r in requests]
    many = getattr(expert, "generate_many", None)
    if callable(many):
        return list(many(reqs, return_exceptions=return_exceptions))
    out: list[ExpertOutput | ExpertError] = []
    for r in reqs:
        try:
            out.append(expert(r.command, r.image, seed=r.seed, detections=r.detections, **dict(r.params)))
        except ExpertError as exc:
            if not return_exceptions:
                raise
            out.append(exc)
    return out


class BatchedExpert(Expert):
    """Wrap ``expert`` so that calls from several threads run as shared batches.

    Args:
        expert: The expert to share (usually a :class:`~experts.diffusers.expert.DiffusersExpert`).
        max_batch: Most requests per batch (>= 1).
        max_wait_s: How long the first request of a batch waits for others, in seconds (>= 0).

    Attributes:
        batch_sizes: Size of every batch run so far (for monitoring).

    Calls from one thread are sequential (each waits for its result), so a single-threaded vector env
    should call :meth:`call_many` (or :func:`batch_call`) with all its envs' requests instead.
    """

    def __init__(self, expert: Expert, *, max_batch: int = 8, max_wait_s: float = 0.005) -> None:
        if not isinstance(expert, Expert):
            raise ValueError(f"expert={expert!r} must be an poser_env.core.expert.Expert.")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch={max_batch!r} must be an int >= 1.")
        if isinstance(max_wait_s, bool) or not isinstance(max_wait_s, (int, float)) or not max_wait_s >= 0:
            raise ValueError(f"max_wait_s={max_wait_s!r} must be a number of seconds >= 0.")
        self.expert = expert
        self.name, self.kind, self.ops, self.cost = expert.name, expert.kind, expert.ops, expert.cost
        self.max_batch = max_batch
        self.max_wait_s = float(max_wait_s)
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[tuple[ExpertRequest, Future[ExpertOutput]] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def call_many(
        self, requests: Sequence[ExpertRequest | Sequence[Any]], *, return_exceptions: bool = False
    ) -> list[ExpertOutput | ExpertError]:
        """:func:`batch_call` on the wrapped expert (no threads involved)."""
        return batch_call(self.expert, requests, return_exceptions=return_exceptions)

    def _generate(
        self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
        detections: Sequence[Detection], **params: Any,
    ) -> ExpertOutput:
        fut: Future[ExpertOutput] = Future()
        with self._lock:
            if self._closed:
                raise ExpertError(f"BatchedExpert {self.name!r} is closed; build a new one.")
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name=f"batch:{self.name}", daemon=True)
                self._worker.start()
            self._queue.put((ExpertRequest(command, image, seed, tuple(detections), params), fut))
        return fut.result()

    def close(self) -> None:
        """Stop the worker thread (pending calls still finish)."""
        with self._lock:
            self._closed = True
            worker = self._worker
            self._queue.put(None)
        if worker is not None:
            worker.join(timeout=60)

    def _loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[tuple[ExpertRequest, Future[ExpertOutput]]]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            results: list[ExpertOutput | BaseException] = list(
                batch_call(self.expert, [r for r, _ in batch], return_exceptions=True))
        except Exception:  # a bad request spoils the batch: run one by one so each caller gets its own error
            results = []
            for r, _ in batch:
                try:
                    results.append(batch_call(self.expert, [r])[0])
                except Exception as exc:
                    results.append(exc)
        for (_, fut), res in zip(batch, results):
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
