"""SceneSim's layout engine: where a text-to-image or editing expert puts an object's box.

Boxes are ``(x1, y1, x2, y2)`` in pixels, y down. A new box is drawn among :data:`N_CANDIDATES` random
candidates that keep at least :data:`GAP` pixels from every occupied box and satisfy the relation constraints
(:func:`poser_env.core.geometry.relation_mask`, the same predicate the rules judge with); all randomness comes
from the caller's ``np.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poser_env.core.geometry import SIZE_FRACTION, Box, relation_mask

__all__ = ["CROWDED_GAP", "FULL", "GAP", "N_CANDIDATES", "ZONES", "Constraint", "box_gap", "candidate_boxes", "free_mask",
           "is_crowded", "layout_box", "place", "zone_for"]

#: Minimum gap in pixels between the boxes of two objects.
GAP: float = 2.0
#: Candidate boxes drawn per placement attempt.
N_CANDIDATES = 48
#: A target is *crowded* when the gap to its nearest other box is below this fraction of its shorter side.
CROWDED_GAP: float = 0.25


def box_gap(a: Box, b: Box) -> float:
    """Gap in pixels between two boxes ``(x1, y1, x2, y2)``: 0 when they touch or overlap, else the larger of the
    horizontal and vertical distances between their edges."""
    dx = max(b[0] - a[2], a[0] - b[2], 0.0)
    dy = max(b[1] - a[3], a[1] - b[3], 0.0)
    return float(max(dx, dy))


def is_crowded(boxes: Sequence[Box], i: int, factor: float = CROWDED_GAP) -> bool:
    """Whether box ``i`` of ``boxes`` is crowded: the gap to the nearest other box is below ``factor`` times
    its shorter side (pixels). A lone box is never crowded. The critic sees the same thing in its detections.

    Raises:
        IndexError: ``i`` is not an index of ``boxes``.
    """
    if not -len(boxes) <= i < len(boxes):
        raise IndexError(f"i={i} is not an index of {len(boxes)} boxes; pass the target's index.")
    a = boxes[i]
    short = min(a[2] - a[0], a[3] - a[1])
    gaps = [box_gap(a, b) for j, b in enumerate(boxes) if j != i % len(boxes)]
    return bool(gaps) and min(gaps) < factor * short


def layout_box(size: str, canvas: int, rng: np.random.Generator) -> tuple[float, float]:
    """Width and height in pixels of an object of ``size`` on a canvas whose shorter side is ``canvas``.

    Each side is ``SIZE_FRACTION[size] * canvas`` times a factor drawn uniformly from [0.9, 1.1].
    """
    base = SIZE_FRACTION[size] * canvas
    w, h = base * rng.uniform(0.9, 1.1, size=2)
    return float(w), float(h)


def free_mask(cands: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """True for candidate boxes (n, 4) at least GAP pixels away from every occupied box (m, 4)."""
    if occupied.size == 0:
        return np.ones(len(cands), dtype=bool)
    c = cands[:, None, :]
    o = occupied[None, :, :]
    apart = (
        (c[..., 2] + GAP <= o[..., 0]) | (o[..., 2] + GAP <= c[..., 0])
        | (c[..., 3] + GAP <= o[..., 1]) | (o[..., 3] + GAP <= c[..., 1])
    )
    return np.asarray(apart.all(axis=1))


@dataclass(frozen=True)
class Constraint:
    relation: str
    other: np.ndarray  # (4,)
    subject: bool  # True: the new box is the relation's subject


#: Where a group that is the *reference* of a relation is drawn (fractions of the canvas x0, x1, y0, y1),
#: so that its subjects find room on the right side of it.
ZONES: dict[str, tuple[float, float, float, float]] = {
    "left of": (0.45, 1.0, 0.0, 1.0), "right of": (0.0, 0.55, 0.0, 1.0),
    "above": (0.0, 1.0, 0.45, 1.0), "below": (0.0, 1.0, 0.0, 0.55),
    "on top of": (0.0, 1.0, 0.4, 1.0), "under": (0.0, 1.0, 0.0, 0.6), "next to": (0.0, 1.0, 0.0, 1.0),
}
FULL = (0.0, 1.0, 0.0, 1.0)


def zone_for(relations: Sequence[str]) -> tuple[float, float, float, float]:
    """Intersection of the zones of a reference group's relations (the whole canvas if they conflict)."""
    x0, x1, y0, y1 = FULL
    for r in relations:
        a, b, c, d = ZONES[r]
        x0, x1, y0, y1 = max(x0, a), min(x1, b), max(y0, c), min(y1, d)
    return (x0, x1, y0, y1) if x1 > x0 and y1 > y0 else FULL


def candidate_boxes(
    rng: np.random.Generator, w: float, h: float, width: int, height: int, constraints: Sequence[Constraint],
    zone: tuple[float, float, float, float] = FULL,
) -> np.ndarray:
    """Candidate boxes (n, 4): half uniform over the zone, half built around a constraint's reference."""
    n = N_CANDIDATES
    lo_x, hi_x = w / 2 + 1, width - w / 2 - 1
    lo_y, hi_y = h / 2 + 1, height - h / 2 - 1
    zx0, zx1 = max(lo_x, zone[0] * width), min(hi_x, zone[1] * width)
    zy0, zy1 = max(lo_y, zone[2] * height), min(hi_y, zone[3] * height)
    if zx1 <= zx0:
        zx0, zx1 = lo_x, hi_x
    if zy1 <= zy0:
        zy0, zy1 = lo_y, hi_y
    cx = rng.uniform(zx0, zx1, size=n)
    cy = rng.uniform(zy0, zy1, size=n)
    subj = [c for c in constraints if c.subject]
    if subj:
        k = n // 2
        c = subj[int(rng.integers(len(subj)))]
        rx1, ry1, rx2, ry2 = c.other
        rcx, rcy, rw, rh = (rx1 + rx2) / 2, (ry1 + ry2) / 2, rx2 - rx1, ry2 - ry1
        gap = rng.uniform(GAP + 0.5, GAP + 6, size=k)
        jx = rng.uniform(-0.3, 0.3, size=k)
        jy = rng.uniform(-0.3, 0.3, size=k)
        if c.relation == "on top of":
            cx[:k], cy[:k] = rcx + jx * rw, ry1 - gap - h / 2
        elif c.relation == "under":
            cx[:k], cy[:k] = rcx + jx * rw, ry2 + gap + h / 2
        elif c.relation == "next to":
            side = np.where(rng.random(k) < 0.5, -1.0, 1.0)
            cx[:k] = np.where(side < 0, rx1 - gap - w / 2, rx2 + gap + w / 2)
            cy[:k] = rcy + jy * rh
        elif c.relation == "left of":
            cx[:k], cy[:k] = rng.uniform(lo_x, max(lo_x, rx1 - w / 2), size=k), rcy + jy * rh * 2
        elif c.relation == "right of":
            cx[:k], cy[:k] = rng.uniform(min(hi_x, rx2 + w / 2), hi_x, size=k), rcy + jy * rh * 2
        elif c.relation == "above":
            cx[:k], cy[:k] = rcx + jx * rw * 2, rng.uniform(lo_y, max(lo_y, ry1 - h / 2), size=k)
        elif c.relation == "below":
            cx[:k], cy[:k] = rcx + jx * rw * 2, rng.uniform(min(hi_y, ry2 + h / 2), hi_y, size=k)
    cx = np.clip(cx, lo_x, hi_x)
    cy = np.clip(cy, lo_y, hi_y)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def place(
    rng: np.random.Generator,
    w: float,
    h: float,
    width: int,
    height: int,
    occupied: list[Box],
    constraints: Sequence[Constraint] = (),
    zone: tuple[float, float, float, float] = FULL,
) -> tuple[Box | None, bool]:
    """A free box of size w x h honouring ``constraints`` if possible: (box or None, constraints met)."""
    occ = np.asarray(occupied, dtype=np.float64).reshape(-1, 4)
    for attempt in range(3):
        cands = candidate_boxes(rng, w, h, width, height, constraints, zone if attempt < 2 else FULL)
        free = free_mask(cands, occ)
        ok = free.copy()
        for c in constraints:
            if c.subject:
                ok &= relation_mask(cands, c.other[None], c.relation)
            else:
                ok &= relation_mask(c.other[None], cands, c.relation)
        idx = np.flatnonzero(ok)
        if idx.size:
            return tuple(float(v) for v in cands[idx[0]]), True  # type: ignore[return-value]
        if not constraints:
            idx = np.flatnonzero(free)
            if idx.size:
                return tuple(float(v) for v in cands[idx[0]]), True  # type: ignore[return-value]
    if constraints:
        box, _ = place(rng, w, h, width, height, occupied, ())
        return box, False
    return None, False
