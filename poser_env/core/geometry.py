"""Box geometry shared by critics, judges and experts: GenEval's position rule and size classes.

Boxes are ``(x1, y1, x2, y2)`` in pixels with y pointing down. See :mod:`poser_env.core.rules` for how the
rules use these predicates (GenEval's position rule, kept exactly, and this project's extensions ``next to``,
``on top of`` and ``under``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from poser_env.core.spec import RELATIONS

__all__ = [
    "CROWDED_GAP",
    "POSITION_MARGIN",
    "SIZE_FRACTION",
    "Box",
    "geneval_relations",
    "is_crowded",
    "nearest_gap",
    "nearest_gaps",
    "relation_holds",
    "relation_mask",
    "size_of_box",
]

#: Object side / shorter canvas side of each size class (SceneSim draws at these; critics classify boxes
#: with the midpoints between them as thresholds).
SIZE_FRACTION: dict[str, float] = {"small": 0.12, "medium": 0.17, "large": 0.24}

POSITION_MARGIN: float = 0.1
_DEAD_ZONE = 1e-3

Box = tuple[float, float, float, float]


def _check_box(arg: str, box: Sequence[float]) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not (b[2] > b[0] and b[3] > b[1]):
        raise ValueError(f"{arg}={tuple(box)!r} must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1 (pixels, y down).")
    return b


def geneval_relations(box_a: Sequence[float], box_b: Sequence[float]) -> frozenset[str]:
    """GenEval's ``relative_position``: the set of ``left of``/``right of``/``above``/``below`` A has to B.

    Args:
        box_a, box_b: ``(x1, y1, x2, y2)`` in pixels, y down.

    Returns:
        The relations that hold (possibly none, e.g. for boxes with nearly the same centre).
    """
    a = _check_box("box_a", box_a)
    b = _check_box("box_b", box_b)
    centre_a = (a[:2] + a[2:]) / 2.0
    centre_b = (b[:2] + b[2:]) / 2.0
    dim_a = a[2:] - a[:2]
    dim_b = b[2:] - b[:2]
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_MARGIN * (dim_a + dim_b), 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < _DEAD_ZONE):
        return frozenset()
    dx, dy = revised / np.linalg.norm(offset)
    out: set[str] = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return frozenset(out)


def relation_holds(box_a: Sequence[float], box_b: Sequence[float], relation: str) -> bool:
    """Whether object A (``box_a``) stands in ``relation`` to object B (``box_b``).

    Args:
        box_a, box_b: ``(x1, y1, x2, y2)`` in pixels, y down, x2 > x1, y2 > y1.
        relation: One of :data:`poser_env.core.spec.RELATIONS` (geometry in the module docstring).

    Raises:
        ValueError: an unknown relation or a malformed box.
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation={relation!r} is not one of {list(RELATIONS)}; use the canonical spelling.")
    a = _check_box("box_a", box_a)
    b = _check_box("box_b", box_b)
    fa, fb = a.tolist(), b.tolist()
    if all(math.isfinite(v) for v in fa + fb):
        return _relation_pair(fa, fb, relation)
    return bool(relation_mask(a[None], b[None], relation)[0])


def _sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _relation_pair(a: list[float], b: list[float], relation: str) -> bool:
    """:func:`relation_mask` for one pair of finite boxes in plain float arithmetic (the same IEEE double
    operations in the same order, so the same answer bit for bit, without numpy's per-call overhead)."""
    dax, day = a[2] - a[0], a[3] - a[1]
    dbx, dby = b[2] - b[0], b[3] - b[1]
    ox = (a[0] + a[2]) / 2.0 - (b[0] + b[2]) / 2.0
    oy = (a[1] + a[3]) / 2.0 - (b[1] + b[3]) / 2.0
    rx = max(abs(ox) - POSITION_MARGIN * (dax + dbx), 0.0) * _sign(ox)
    ry = max(abs(oy) - POSITION_MARGIN * (day + dby), 0.0) * _sign(oy)
    live = not (abs(rx) < _DEAD_ZONE and abs(ry) < _DEAD_ZONE)
    norm = math.sqrt(ox * ox + oy * oy)  # np.linalg.norm(axis=1): sqrt of the plain sum of squares
    d = norm if norm > 0 else 1.0
    dx, dy = rx / d, ry / d
    if relation == "left of":
        return live and dx < -0.5
    if relation == "right of":
        return live and dx > 0.5
    if relation == "above":
        return live and dy < -0.5
    if relation == "below":
        return live and dy > 0.5
    if relation == "next to":
        side = live and (dx < -0.5 or dx > 0.5)
        gap = max(max(a[0] - b[2], b[0] - a[2]), 0.0)
        return side and gap <= (dax + dbx) / 2.0
    cx = (a[0] + a[2]) / 2.0
    over = b[0] <= cx <= b[2]
    tol = 0.25 * (day + dby)
    if relation == "on top of":
        return live and dy < -0.5 and over and b[1] - a[3] <= tol
    if relation == "under":
        return live and dy > 0.5 and over and a[1] - b[3] <= tol
    raise ValueError(f"relation={relation!r} is not one of {list(RELATIONS)}; use the canonical spelling.")


def relation_mask(boxes_a: np.ndarray, boxes_b: np.ndarray, relation: str) -> np.ndarray:
    """Vectorised :func:`relation_holds` (no validation): boolean ``(n,)`` for ``(n, 4)`` boxes (or broadcast).

    Used by experts to lay out many candidate boxes at once; always agrees with :func:`relation_holds`.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    dim_a = a[:, 2:] - a[:, :2]
    dim_b = b[:, 2:] - b[:, :2]
    offset = (a[:, :2] + a[:, 2:]) / 2.0 - (b[:, :2] + b[:, 2:]) / 2.0
    revised = np.maximum(np.abs(offset) - POSITION_MARGIN * (dim_a + dim_b), 0.0) * np.sign(offset)
    live = ~np.all(np.abs(revised) < _DEAD_ZONE, axis=1)
    norm = np.linalg.norm(offset, axis=1)
    unit = revised / np.where(norm > 0, norm, 1.0)[:, None]
    dx, dy = unit[:, 0], unit[:, 1]
    if relation == "left of":
        return live & (dx < -0.5)
    if relation == "right of":
        return live & (dx > 0.5)
    if relation == "above":
        return live & (dy < -0.5)
    if relation == "below":
        return live & (dy > 0.5)
    if relation == "next to":
        side = live & ((dx < -0.5) | (dx > 0.5))
        gap = np.maximum(np.maximum(a[:, 0] - b[:, 2], b[:, 0] - a[:, 2]), 0.0)
        return side & (gap <= (dim_a[:, 0] + dim_b[:, 0]) / 2.0)
    cx = (a[:, 0] + a[:, 2]) / 2.0
    over = (b[:, 0] <= cx) & (cx <= b[:, 2])
    tol = 0.25 * (dim_a[:, 1] + dim_b[:, 1])
    if relation == "on top of":
        return live & (dy < -0.5) & over & (b[:, 1] - a[:, 3] <= tol)
    if relation == "under":
        return live & (dy > 0.5) & over & (a[:, 1] - b[:, 3] <= tol)
    raise ValueError(f"relation={relation!r} is not one of {list(RELATIONS)}; use the canonical spelling.")


def size_of_box(box: Sequence[float], width: int, height: int) -> str:
    """Size class of a box: mean side / shorter canvas side, thresholds at the midpoints of SIZE_FRACTION."""
    b = _check_box("box", box)
    side = ((b[2] - b[0]) + (b[3] - b[1])) / 2.0 / min(width, height)
    names = sorted(SIZE_FRACTION, key=SIZE_FRACTION.__getitem__)
    for lo, hi in itertools.pairwise(names):
        if side < (SIZE_FRACTION[lo] + SIZE_FRACTION[hi]) / 2.0:
            return lo
    return names[-1]


#: A box is *crowded* when the gap to its nearest other box is below this fraction of its shorter side.
CROWDED_GAP: float = 0.25


def nearest_gap(box: Sequence[float], others: Sequence[Sequence[float]]) -> float:
    """Smallest gap in pixels between ``box`` and any box of ``others`` (0 when they touch or overlap; ``inf``
    with no others). The gap of two boxes is the Euclidean distance between their closest points."""
    b = _check_box("box", box)
    if len(others) == 0:
        return float("inf")
    o = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    dx = np.maximum(0.0, np.maximum(o[:, 0] - b[2], b[0] - o[:, 2]))
    dy = np.maximum(0.0, np.maximum(o[:, 1] - b[3], b[1] - o[:, 3]))
    return float(np.min(np.hypot(dx, dy)))


def nearest_gaps(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """:func:`nearest_gap` of every box to all the others at once: float64 ``(n,)`` in pixels (``inf`` for a
    lone box), equal element for element to ``nearest_gap(boxes[j], boxes without j)``.

    Raises:
        ValueError: a malformed box (as :func:`nearest_gap`).
    """
    b = np.stack([_check_box("box", x) for x in boxes]) if len(boxes) else np.zeros((0, 4))
    dx = np.maximum(0.0, np.maximum(b[None, :, 0] - b[:, None, 2], b[:, None, 0] - b[None, :, 2]))
    dy = np.maximum(0.0, np.maximum(b[None, :, 1] - b[:, None, 3], b[:, None, 1] - b[None, :, 3]))
    gap = np.hypot(dx, dy)
    np.fill_diagonal(gap, np.inf)
    return gap.min(axis=1) if len(b) else np.zeros(0)


def is_crowded(box: Sequence[float], others: Sequence[Sequence[float]]) -> bool:
    """True when ``box``'s nearest other box is closer than :data:`CROWDED_GAP` x its shorter side (pixels)."""
    b = _check_box("box", box)
    return nearest_gap(box, others) < CROWDED_GAP * float(min(b[2] - b[0], b[3] - b[1]))
