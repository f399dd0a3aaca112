"""The observation layout of :class:`poser_env.env.ImagePoserEnv`: the space and the vectors that fill it.

This module is the contract between the env and anything that reads its observations (the features
extractor in ``agents/extractor.py`` reads sizes from :func:`observation_space`; hand-written agents read
slots by name through :data:`FEEDBACK_LAYOUT`, :data:`PROGRESS_LAYOUT` and :func:`history_layout`)::

    from poser_env.observation import FEEDBACK_LAYOUT, read_feedback
    fb = read_feedback(obs["feedback"])
    if fb["command_pending"][0] > 0:
        op = OPS[int(fb["op"].argmax())]

Keys of the ``Dict`` space (all ``float32`` unless noted):

- ``"prompt"``: ``Box(-1, 1, (D,))``: embedding of the whole prompt (D = text encoder size).
- ``"command"``: ``Box(-1, 1, (D,))``: embedding of the current command (``"done"`` when none is left).
- ``"feedback"`` (optional): ``Box(0, 1, (FEEDBACK_DIM,))`` laid out as :data:`FEEDBACK_LAYOUT`.
- ``"progress"``: ``Box(0, 1, (PROGRESS_DIM,))`` laid out as :data:`PROGRESS_LAYOUT`.
- ``"history"``: ``Box(0, 1, (2 * n_experts + 2,))`` laid out as :func:`history_layout`.
- ``"thumbnail"`` (optional): ``Box(0, 255, (S, S, 3), uint8)``: the canvas resized to S x S pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from gymnasium import spaces

from poser_env.core.commands import OPS, Command
from poser_env.core.feedback import Feedback
from poser_env.core.spec import ASSERTION_KINDS, Spec

__all__ = [
    "FEEDBACK_DIM",
    "FEEDBACK_LAYOUT",
    "PROGRESS_DIM",
    "PROGRESS_LAYOUT",
    "feedback_vector",
    "history_layout",
    "history_vector",
    "observation_space",
    "progress_vector",
    "read_feedback",
]

_N_KINDS = len(ASSERTION_KINDS)
_N_OPS = len(OPS)


def _layout(sizes: Mapping[str, int]) -> Mapping[str, slice]:
    out: dict[str, slice] = {}
    start = 0
    for name, n in sizes.items():
        out[name] = slice(start, start + n)
        start += n
    return MappingProxyType(out)


#: Slots of the ``"feedback"`` vector, name -> slice (every value in [0, 1]; all 0 before the first image
#: except ``present`` and the command slots):
#:
#: - ``alignment``, ``fidelity``, ``aesthetics`` (1 each): the critic's scores of the canvas.
#: - ``satisfied`` (9): fraction of the spec's assertions of each kind that hold, in the order of
#:   :data:`poser_env.core.spec.ASSERTION_KINDS`.
#: - ``present`` (9): 1 where the spec has assertions of that kind (same order).
#: - ``command_pending`` (1): 1 while a command is left in the plan.
#: - ``command_held`` (1): fraction of the current command's assertions that hold.
#: - ``command_attempts`` (1): attempts on the current command / ``max_attempts`` (capped at 1).
#: - ``op`` (10): one-hot of the current command's op, in the order of :data:`poser_env.core.commands.OPS`.
#: - ``canvas_empty`` (1): 1 before the first image.
FEEDBACK_LAYOUT: Mapping[str, slice] = _layout({
    "alignment": 1, "fidelity": 1, "aesthetics": 1, "satisfied": _N_KINDS, "present": _N_KINDS,
    "command_pending": 1, "command_held": 1, "command_attempts": 1, "op": _N_OPS, "canvas_empty": 1,
})
#: Length of the ``"feedback"`` vector (35).
FEEDBACK_DIM: int = max(s.stop for s in FEEDBACK_LAYOUT.values())

#: Slots of the ``"progress"`` vector, name -> slice (each in [0, 1]):
#:
#: - ``step``: steps taken / the step budget (``max_steps``, the ``TimeLimit``'s ``max_episode_steps``).
#: - ``done``, ``pending``, ``dropped``: commands finished, still to run and given up, each over the number of
#:   commands planned so far.
#: - ``attempts``: failed attempts on the current command / ``max_attempts`` (capped at 1).
PROGRESS_LAYOUT: Mapping[str, slice] = _layout({"step": 1, "done": 1, "pending": 1, "dropped": 1, "attempts": 1})
#: Length of the ``"progress"`` vector (5).
PROGRESS_DIM: int = max(s.stop for s in PROGRESS_LAYOUT.values())


def history_layout(n_experts: int) -> Mapping[str, slice]:
    """Slots of the ``"history"`` vector for ``n_experts`` experts, name -> slice (each in [0, 1]).

    - ``calls`` (n_experts): calls of each expert / the step budget (capped at 1), in action order.
    - ``last_action`` (n_experts + 2): one-hot: entry 0 is set before the first action, entries 1..n_experts
      for the experts (action order), the last entry for STOP.
    """
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts={n_experts!r} must be an int >= 1.")
    return _layout({"calls": n_experts, "last_action": n_experts + 2})


def observation_space(
    *, text_dim: int, n_experts: int, feedback: bool = True, thumbnail_size: int | None = None
) -> spaces.Dict:
    """The ``Dict`` observation space (see the module docstring).

    Args:
        text_dim: Size of a text embedding (the encoder's ``dim``, >= 1).
        n_experts: Number of experts (>= 1).
        feedback: Include the ``"feedback"`` key.
        thumbnail_size: Side in pixels of the ``"thumbnail"`` key, or None for no thumbnail.
    """
    obs: dict[str, spaces.Space[Any]] = {
        "prompt": spaces.Box(-1.0, 1.0, (text_dim,), np.float32),
        "command": spaces.Box(-1.0, 1.0, (text_dim,), np.float32),
    }
    if feedback:
        obs["feedback"] = spaces.Box(0.0, 1.0, (FEEDBACK_DIM,), np.float32)
    obs["progress"] = spaces.Box(0.0, 1.0, (PROGRESS_DIM,), np.float32)
    obs["history"] = spaces.Box(0.0, 1.0, (2 * n_experts + 2,), np.float32)
    if thumbnail_size is not None:
        obs["thumbnail"] = spaces.Box(0, 255, (thumbnail_size, thumbnail_size, 3), np.uint8)
    return spaces.Dict(obs)


def feedback_vector(
    spec: Spec, feedback: Feedback | None, command: Command | None, *, canvas_empty: bool, max_attempts: int
) -> np.ndarray:
    """The ``"feedback"`` vector (:data:`FEEDBACK_LAYOUT`) of a state.

    Args:
        spec: The prompt spec the agent works from.
        feedback: The critic's feedback on the canvas (None before the first image).
        command: The current command (None when the plan is finished).
        canvas_empty: True before the first image.
        max_attempts: Attempts allowed per command (>= 1).
    """
    L = FEEDBACK_LAYOUT
    v = np.zeros(FEEDBACK_DIM, dtype=np.float32)
    kinds_present = {a.kind for a in spec.assertions()}
    if feedback is not None:
        v[L["alignment"]] = feedback.alignment
        v[L["fidelity"]] = feedback.fidelity
        v[L["aesthetics"]] = feedback.aesthetics
        by_kind = feedback.satisfied_by_kind()
        v[L["satisfied"]] = [by_kind.get(k, 0.0) for k in ASSERTION_KINDS]
    v[L["present"]] = [float(k in kinds_present) for k in ASSERTION_KINDS]
    if command is not None:
        v[L["command_pending"]] = 1.0
        if feedback is not None and command.assertion_ids:
            held = [feedback.verdict(i).ok for i in command.assertion_ids
                    if any(x.assertion_id == i for x in feedback.verdicts)]
            v[L["command_held"]] = float(np.mean(held)) if held else 0.0
        v[L["command_attempts"]] = min(1.0, command.attempts / max_attempts)
        v[L["op"].start + OPS.index(command.op)] = 1.0
    v[L["canvas_empty"]] = float(canvas_empty)
    return v


def progress_vector(
    *, step: int, max_steps: int, n_done: int, n_pending: int, n_dropped: int, attempts: int, max_attempts: int
) -> np.ndarray:
    """The ``"progress"`` vector (:data:`PROGRESS_LAYOUT`): counts over the step budget and the plan size."""
    total = max(1, n_done + n_pending + n_dropped)
    return np.array(
        [min(1.0, step / max_steps), n_done / total, n_pending / total, n_dropped / total,
         min(1.0, attempts / max_attempts)],
        dtype=np.float32,
    )


def history_vector(calls: np.ndarray, last_action: int, *, max_steps: int) -> np.ndarray:
    """The ``"history"`` vector (:func:`history_layout`).

    Args:
        calls: Calls per expert so far (shape ``(n_experts,)``).
        last_action: The last action taken (``n_experts`` is STOP), or -1 before the first.
        max_steps: The step budget (>= 1).
    """
    n = len(calls)
    hist = np.zeros(2 * n + 2, dtype=np.float32)
    hist[:n] = np.minimum(1.0, calls / max_steps)
    hist[n + 1 + last_action] = 1.0  # -1 (no action yet) -> index n, the first slot of last_action
    return hist


def read_feedback(vector: np.ndarray) -> dict[str, np.ndarray]:
    """Split a ``"feedback"`` vector (or a batch of them, slots on the last axis) into its named slots."""
    arr = np.asarray(vector)
    if arr.shape[-1:] != (FEEDBACK_DIM,):
        raise ValueError(f"vector has shape {arr.shape}; a feedback vector has {FEEDBACK_DIM} entries on its last axis.")
    return {name: arr[..., s] for name, s in FEEDBACK_LAYOUT.items()}
