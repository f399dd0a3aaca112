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
- ``"slots"`` (factored action mode only): ``Box(0, 1, (K * SLOT_DIM + SCENE_DIM,))``: for each of the K
  command slots (the first K pending commands, the ones the action may pick) :data:`SLOT_LAYOUT`, then
  :data:`SCENE_LAYOUT`; read it with :func:`read_slots`.
- ``"thumbnail"`` (optional): ``Box(0, 255, (S, S, 3), uint8)``: the canvas resized to S x S pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from gymnasium import spaces

from poser_env.core.commands import OPS, Command, CommandError, ParsedCommand
from poser_env.core.feedback import Detection, Feedback
from poser_env.core.geometry import CROWDED_GAP, nearest_gaps
from poser_env.core.grammar import parse_command
from poser_env.core.spec import ASSERTION_KINDS, Spec

__all__ = [
    "FEEDBACK_DIM",
    "FEEDBACK_LAYOUT",
    "PROGRESS_DIM",
    "PROGRESS_LAYOUT",
    "SCENE_DIM",
    "SCENE_LAYOUT",
    "SLOT_DIM",
    "SLOT_LAYOUT",
    "feedback_vector",
    "history_layout",
    "history_vector",
    "observation_space",
    "progress_vector",
    "read_feedback",
    "read_slots",
    "slots_vector",
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


#: Features of one command slot of the ``"slots"`` vector, name -> slice (each in [0, 1]; all 0 for an empty
#: slot). The context features come from the critic's detections, so they are 0 without feedback in the
#: observation (``feedback_in_obs=False``) and before the first image:
#:
#: - ``present`` (1): a pending command fills this slot.
#: - ``op`` (10): one-hot of its op (order of :data:`poser_env.core.commands.OPS`).
#: - ``attempts`` (1): executions so far / ``max_attempts`` (capped at 1).
#: - ``held`` (1): fraction of its assertions the critic says hold.
#: - ``found`` (1): the critic detects its target (the object it edits; for ``add``, the reference object).
#: - ``size`` (1): the target's detected box: sqrt(box area / image area).
#: - ``crowded`` (1): the target's nearest other detection is closer than ``CROWDED_GAP`` x its shorter side.
#: - ``gap`` (1): that gap / the image's shorter side (capped at 1; 1 with no other detection).
#: - ``same_noun`` (1): detections of the target's noun / 5 (capped at 1).
#: - ``ordinal`` (1): the command singles out one of several objects of its noun ("the second clock").
SLOT_LAYOUT: Mapping[str, slice] = _layout({
    "present": 1, "op": _N_OPS, "attempts": 1, "held": 1, "found": 1, "size": 1, "crowded": 1, "gap": 1,
    "same_noun": 1, "ordinal": 1,
})
#: Length of one slot's features (19).
SLOT_DIM: int = max(s.stop for s in SLOT_LAYOUT.values())
#: Scene features after the slots: ``objects`` (detections / 10, capped at 1), ``crowded`` (fraction of detections
#: that are crowded). From the critic's detections (0 without feedback in the observation).
SCENE_LAYOUT: Mapping[str, slice] = _layout({"objects": 1, "crowded": 1})
#: Length of the scene features (2).
SCENE_DIM: int = max(s.stop for s in SCENE_LAYOUT.values())


def observation_space(
    *, text_dim: int, n_experts: int, feedback: bool = True, thumbnail_size: int | None = None,
    command_slots: int | None = None,
) -> spaces.Dict:
    """The ``Dict`` observation space (see the module docstring).

    Args:
        text_dim: Size of a text embedding (the encoder's ``dim``, >= 1).
        n_experts: Number of experts (>= 1).
        feedback: Include the ``"feedback"`` key.
        thumbnail_size: Side in pixels of the ``"thumbnail"`` key, or None for no thumbnail.
        command_slots: K for the ``"slots"`` key (factored action mode), or None for no slots key.
    """
    obs: dict[str, spaces.Space[Any]] = {
        "prompt": spaces.Box(-1.0, 1.0, (text_dim,), np.float32),
        "command": spaces.Box(-1.0, 1.0, (text_dim,), np.float32),
    }
    if feedback:
        obs["feedback"] = spaces.Box(0.0, 1.0, (FEEDBACK_DIM,), np.float32)
    obs["progress"] = spaces.Box(0.0, 1.0, (PROGRESS_DIM,), np.float32)
    obs["history"] = spaces.Box(0.0, 1.0, (2 * n_experts + 2,), np.float32)
    if command_slots is not None:
        obs["slots"] = spaces.Box(0.0, 1.0, (command_slots * SLOT_DIM + SCENE_DIM,), np.float32)
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


@lru_cache(maxsize=8192)
def _parsed(text: str) -> ParsedCommand | None:
    try:
        return parse_command(text)
    except CommandError:
        return None


def _target(parsed: ParsedCommand | None, dets: tuple[Detection, ...]) -> tuple[int | None, int]:
    """(index in ``dets`` of the command's target or None, detections of its noun)."""
    if parsed is None:
        return None, 0
    noun = parsed.noun
    if noun is None and parsed.spec.entities:
        noun = parsed.spec.entities[0].noun
    if parsed.op == "add":
        noun = parsed.reference
    if noun is None:
        return None, 0
    idx = sorted((i for i, d in enumerate(dets) if d.label == noun),
                 key=lambda i: ((dets[i].box[0] + dets[i].box[2]) / 2, (dets[i].box[1] + dets[i].box[3]) / 2, i))
    if not idx:
        return None, 0
    if parsed.op != "add" and parsed.index is not None:
        return (idx[parsed.index] if -len(idx) <= parsed.index < len(idx) else None), len(idx)
    return idx[0], len(idx)


def slots_vector(
    commands: Sequence[Command | None], feedback: Feedback | None, *, image_shape: tuple[int, ...] | None,
    max_attempts: int, context: bool = True,
) -> np.ndarray:
    """The ``"slots"`` vector: :data:`SLOT_LAYOUT` for each of ``commands`` (None: an empty slot), then
    :data:`SCENE_LAYOUT`.

    Args:
        commands: The K command slots (the first K pending commands, None-padded).
        feedback: The critic's feedback on the canvas (None before the first image).
        image_shape: Shape of the canvas (H, W, 3) for the size features, or None before the first image.
        max_attempts: Attempts allowed per command (>= 1).
        context: Fill the feedback-derived features (False with ``feedback_in_obs=False``).
    """
    L = SLOT_LAYOUT
    k = len(commands)
    v = np.zeros(k * SLOT_DIM + SCENE_DIM, dtype=np.float32)
    use = context and feedback is not None and image_shape is not None
    dets = feedback.detections if use and feedback is not None else ()
    boxes = [d.box for d in dets]
    H, W = (image_shape[0], image_shape[1]) if image_shape is not None else (1, 1)
    side = float(min(H, W))
    verdicts = {x.assertion_id: x.ok for x in feedback.verdicts} if use and feedback is not None else {}
    gaps = nearest_gaps(boxes).tolist()  # each box's gap to its nearest other box (pixels), computed once
    for j, cmd in enumerate(commands):
        if cmd is None:
            continue
        o = j * SLOT_DIM
        v[o + L["present"].start] = 1.0
        v[o + L["op"].start + OPS.index(cmd.op)] = 1.0
        v[o + L["attempts"].start] = min(1.0, cmd.attempts / max_attempts)
        if not use:
            continue
        held = [verdicts[i] for i in cmd.assertion_ids if i in verdicts]
        v[o + L["held"].start] = float(np.mean(held)) if held else 0.0
        parsed = _parsed(cmd.text)
        t, same = _target(parsed, dets)
        v[o + L["same_noun"].start] = min(1.0, same / 5.0)
        v[o + L["ordinal"].start] = float(parsed is not None and parsed.op != "add" and parsed.index is not None
                                          and same >= 2)
        if t is None:
            v[o + L["gap"].start] = 1.0
            continue
        b = dets[t].box
        gap = gaps[t]
        v[o + L["found"].start] = 1.0
        v[o + L["size"].start] = min(1.0, float(np.sqrt(max(0.0, (b[2] - b[0]) * (b[3] - b[1])) / (H * W))))
        v[o + L["crowded"].start] = float(gap < CROWDED_GAP * min(b[2] - b[0], b[3] - b[1]))
        v[o + L["gap"].start] = min(1.0, gap / side)
    if dets:
        S = SCENE_LAYOUT
        s0 = k * SLOT_DIM
        v[s0 + S["objects"].start] = min(1.0, len(dets) / 10.0)
        crowded = [gaps[j] < CROWDED_GAP * min(b[2] - b[0], b[3] - b[1]) for j, b in enumerate(boxes)]
        v[s0 + S["crowded"].start] = float(np.mean(crowded))
    return v


def read_slots(vector: np.ndarray, command_slots: int) -> dict[str, np.ndarray]:
    """Split a ``"slots"`` vector of ``command_slots`` slots (or a batch, on the last axis) into named features:
    each :data:`SLOT_LAYOUT` name maps to an array of shape ``(..., command_slots, width)``, each
    :data:`SCENE_LAYOUT` name (prefixed ``scene_``) to ``(..., width)``."""
    arr = np.asarray(vector)
    n = command_slots * SLOT_DIM + SCENE_DIM
    if arr.shape[-1:] != (n,):
        raise ValueError(f"vector has shape {arr.shape}; a slots vector of {command_slots} slots has {n} entries.")
    per = arr[..., : command_slots * SLOT_DIM].reshape(*arr.shape[:-1], command_slots, SLOT_DIM)
    out = {name: per[..., s] for name, s in SLOT_LAYOUT.items()}
    scene = arr[..., command_slots * SLOT_DIM:]
    out.update({f"scene_{name}": scene[..., s] for name, s in SCENE_LAYOUT.items()})
    return out
