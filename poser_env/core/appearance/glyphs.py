"""Procedural glyphs: any noun drawn as a silhouette derived from a stable hash of its singular form.

A glyph is one connected blob: a rotated elliptic body with two to four limbs (thick strokes from the
centre, each ending in a round or square lobe). The parameters come from
``stable_hash(singular(noun))``, so ``"clocks"`` and ``"clock"`` (and ``"mice"`` and ``"mouse"``) draw
the same shape in every process. The silhouette is stretched to fill its box exactly (its mask touches
all four sides), so a box measured from pixels matches the box the object was drawn in.

``noise`` in [0, 1] perturbs the parameters (and wobbles the outline) deterministically from ``seed``:
sloppy experts draw ambiguous shapes that a detector may confuse, like real ones.

The pixel critic matches a blob against :func:`template` of each queried noun (a small square mask),
with :func:`descriptor` / :func:`match_scores`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from poser_env.core.text import singular, stable_hash

__all__ = [
    "TEMPLATE_SIZE",
    "GlyphParams",
    "canonical_noun",
    "clear_cache",
    "descriptor",
    "glyph",
    "glyph_params",
    "match_scores",
    "template",
]

#: Side in pixels of the templates the critic matches against.
TEMPLATE_SIZE = 16


def canonical_noun(noun: str) -> str:
    """The key a glyph derives from: the singular, lower-case, whitespace-normalised noun."""
    if not isinstance(noun, str) or not noun.strip():
        raise ValueError(f"noun={noun!r} must be a non-empty string such as 'clock'.")
    return " ".join(singular(noun).split())


@dataclass(frozen=True)
class GlyphParams:
    """Shape parameters of one glyph (all lengths in units of the shape's own frame, about [-1.3, 1.3]).

    Attributes:
        body: (rx, ry, angle) of the central ellipse.
        limbs: One (angle, length, thickness, lobe radius, lobe is square 0/1) per limb.
        wobble: (amplitude, frequency, phase) of an outline wobble (0 amplitude for canonical glyphs).
    """

    body: tuple[float, float, float]
    limbs: tuple[tuple[float, float, float, float, float], ...]
    wobble: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _draw_params(rng: np.random.Generator) -> GlyphParams:
    rx, ry = rng.uniform(0.38, 0.62, size=2)
    body = (float(rx), float(ry), float(rng.uniform(0, np.pi)))
    n = int(rng.integers(2, 5))
    # spread limb angles so limbs rarely overlap: jittered equal spacing from a random start
    start = rng.uniform(0, 2 * np.pi)
    angles = start + np.arange(n) * 2 * np.pi / n + rng.uniform(-0.5, 0.5, size=n) * (np.pi / n)
    limbs = tuple(
        (
            float(a),
            float(rng.uniform(0.55, 1.05)),
            float(rng.uniform(0.16, 0.30)),
            float(rng.uniform(0.0, 0.32)),
            float(rng.integers(0, 2)),
        )
        for a in angles
    )
    return GlyphParams(body=body, limbs=limbs)


@lru_cache(maxsize=4096)
def glyph_params(noun: str) -> GlyphParams:
    """The canonical parameters of ``noun``'s glyph (from ``stable_hash(singular(noun))``)."""
    key = canonical_noun(noun)
    return _draw_params(np.random.default_rng(stable_hash("glyph", key)))


def _clip(v: float, lo: float, hi: float) -> float:
    """``float(np.clip(v, lo, hi))`` for a finite scalar, without numpy's per-call overhead (same value)."""
    return float(min(max(v, lo), hi))


def _perturb(p: GlyphParams, noise: float, seed: int, key: str) -> GlyphParams:
    if noise <= 0.0:
        return p
    rng = np.random.default_rng(stable_hash("glyph-noise", key, int(seed)))
    normal, exp = rng.normal, np.exp
    rx, ry, ang = p.body
    s = 0.6 * noise
    body = (
        _clip(rx * exp(0.35 * s * normal()), 0.25, 0.8),
        _clip(ry * exp(0.35 * s * normal()), 0.25, 0.8),
        float(ang + 0.8 * s * normal()),
    )
    limbs = []
    for a, ln, th, lobe, sq in p.limbs:
        limbs.append(
            (
                float(a + 0.7 * s * normal()),
                _clip(ln * exp(0.35 * s * normal()), 0.35, 1.25),
                _clip(th * exp(0.35 * s * normal()), 0.12, 0.4),
                _clip(lobe + 0.15 * s * normal(), 0.0, 0.4),
                float(sq if rng.random() > 0.3 * s else 1.0 - sq),
            )
        )
    wobble = (float(0.18 * s), float(rng.integers(3, 8)), float(rng.uniform(0, 2 * np.pi)))
    return GlyphParams(body=body, limbs=tuple(limbs), wobble=wobble)


_EPS = 1e-9  # margin (shape units) of the conservative primitive boxes, far above float rounding


def _span(lo: float, hi: float, grid: list[float], amp: float) -> tuple[int, int]:
    """Index range [i0, i1) of the sorted ``grid`` points that can lie in [lo, hi] after a wobble of ``amp``."""
    if amp > 0:  # a point p is inside iff p / scale is, scale in [1 - amp, 1 + amp]: p = scale * q
        lo = min(lo * (1 - amp), lo * (1 + amp))
        hi = max(hi * (1 - amp), hi * (1 + amp))
    return bisect.bisect_left(grid, lo - _EPS), bisect.bisect_right(grid, hi + _EPS)


def _field(p: GlyphParams, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean inside-test of the shape at points (xs[None, :], ys[:, None]); ``xs`` and ``ys`` increasing.

    Each primitive (body ellipse, limb capsules, lobes) is evaluated only on the grid points inside its
    conservative bounding box (outside it the test is False for certain), with exactly the per-point arithmetic
    of the full-grid test, so the mask is bit-identical to evaluating every primitive everywhere.
    """
    amp, freq, ph = p.wobble
    wob = amp > 0
    rx, ry, ang = p.body
    c, s = np.cos(ang), np.sin(ang)
    hw, hh = float(np.hypot(rx * c, ry * s)), float(np.hypot(rx * s, ry * c))
    prims: list[tuple[int, tuple[float, float, float, float]]] = [(-1, (-hw, -hh, hw, hh))]
    trig = []
    for k, (a, ln, th, lobe, _sq) in enumerate(p.limbs):
        dx, dy = np.cos(a), np.sin(a)
        trig.append((dx, dy))
        ex, ey = float(ln * dx), float(ln * dy)
        prims.append((k, (min(0.0, ex) - th, min(0.0, ey) - th, max(0.0, ex) + th, max(0.0, ey) + th)))
        if lobe > 0.05:
            prims.append((len(p.limbs) + k, (ex - lobe, ey - lobe, ex + lobe, ey + lobe)))
    spans = []
    xl, yl = xs.tolist(), ys.tolist()
    for k, (x1, y1, x2, y2) in prims:
        c0, c1 = _span(x1, x2, xl, amp)
        r0, r1 = _span(y1, y2, yl, amp)
        if c1 > c0 and r1 > r0:
            spans.append((k, r0, r1, c0, c1))
    inside = np.zeros((len(ys), len(xs)), dtype=bool)
    if not spans:
        return inside
    R0, R1 = min(t[1] for t in spans), max(t[2] for t in spans)
    C0, C1 = min(t[3] for t in spans), max(t[4] for t in spans)
    x = xs[None, C0:C1]
    y = ys[R0:R1, None]
    if wob:
        theta = np.arctan2(y, x)
        scale = 1.0 + amp * np.sin(freq * theta + ph)
        x = x / scale
        y = y / scale

    def part(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        if wob:
            return x[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0], y[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0]
        return x[:, c0 - C0 : c1 - C0], y[r0 - R0 : r1 - R0, :]

    n = len(p.limbs)
    for k, r0, r1, c0, c1 in spans:
        px_, py_ = part(r0, r1, c0, c1)
        if k < 0:
            u = px_ * c + py_ * s
            v = -px_ * s + py_ * c
            hit = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        elif k < n:
            a, ln, th, lobe, sq = p.limbs[k]
            dx, dy = trig[k]
            t = np.clip(px_ * dx + py_ * dy, 0.0, ln)
            qx = px_ - t * dx
            qy = py_ - t * dy
            hit = qx * qx + qy * qy <= th * th
        else:
            a, ln, th, lobe, sq = p.limbs[k - n]
            dx, dy = trig[k - n]
            ex_, ey_ = px_ - ln * dx, py_ - ln * dy
            if sq >= 0.5:
                hit = (np.abs(ex_) <= lobe) & (np.abs(ey_) <= lobe)
            else:
                hit = ex_ * ex_ + ey_ * ey_ <= lobe * lobe
        inside[r0:r1, c0:c1] |= hit
    return inside


_EXTENT = 1.6
_BBOX_N = 96
_BBOX_GRID = (np.arange(_BBOX_N) + 0.5) / _BBOX_N * 2 * _EXTENT - _EXTENT
_CROSS = ndimage.generate_binary_structure(2, 1)


def _bbox_of(p: GlyphParams) -> tuple[float, float, float, float]:
    """Bounding box (x1, y1, x2, y2) of the shape in its own frame, from a fine raster."""
    grid = _BBOX_GRID
    m = _field(p, grid, grid)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    step = 2 * _EXTENT / _BBOX_N
    return (
        float(grid[cols[0]] - step / 2),
        float(grid[rows[0]] - step / 2),
        float(grid[cols[-1]] + step / 2),
        float(grid[rows[-1]] + step / 2),
    )


def _fill_holes(m: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(m)``: background not 4-connected to the border becomes foreground."""
    lab, n = ndimage.label(~m, structure=_CROSS)
    if n == 0:
        return m
    border = np.zeros(n + 1, dtype=bool)
    border[lab[0]] = True
    border[lab[-1]] = True
    border[lab[:, 0]] = True
    border[lab[:, -1]] = True
    border[0] = True
    return m | ~border[lab]


def _rasterize(p: GlyphParams, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = _bbox_of(p)
    xs = x1 + (np.arange(width) + 0.5) / width * (x2 - x1)
    ys = y1 + (np.arange(height) + 0.5) / height * (y2 - y1)
    m = _field(p, xs, ys)
    # one blob: keep the largest connected component, fill holes
    lab, n = ndimage.label(m, structure=_CROSS)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    m = _fill_holes(m)
    # stretch to touch all four sides of the box (thin tips can fall between pixel centres)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:  # pragma: no cover - degenerate, cannot happen for drawn params
        return np.ones((height, width), dtype=bool)
    if rows[0] > 0 or rows[-1] < height - 1 or cols[0] > 0 or cols[-1] < width - 1:
        m = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        ri = ((np.arange(height) + 0.5) * m.shape[0] / height).astype(np.intp)
        ci = ((np.arange(width) + 0.5) * m.shape[1] / width).astype(np.intp)
        m = m[ri[:, None], ci[None, :]]
    return np.ascontiguousarray(m, dtype=bool)


def _check_args(noun: str, size: int, noise: float, seed: int) -> None:
    canonical_noun(noun)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= int(size) <= 4096:
        raise ValueError(f"size={size!r} must be an int from 2 to 4096 pixels.")
    if not isinstance(noise, (int, float, np.floating)) or not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"noise={noise!r} must be a float in [0, 1] (0 = the canonical glyph).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed={seed!r} must be an int.")


@lru_cache(maxsize=8192)
def _glyph_cached(key: str, width: int, height: int, noise: float, seed: int) -> np.ndarray:
    p = _perturb(glyph_params(key), noise, seed, key)
    m = _rasterize(p, width, height)
    m.setflags(write=False)
    return m


def clear_cache() -> None:
    """Forget every rasterised glyph (benchmarks time cold glyphs; results never depend on the cache)."""
    _glyph_cached.cache_clear()


def glyph(noun: str, size: int, *, noise: float = 0.0, seed: int = 0, height: int | None = None) -> np.ndarray:
    """The silhouette of ``noun`` as a boolean mask of ``size`` x ``size`` pixels (read-only, cached).

    Args:
        noun: Any noun; plural and singular forms draw the same glyph.
        size: Side in pixels (2..4096); the width when ``height`` is given.
        noise: 0..1, how far the shape departs from the canonical glyph (0 = canonical).
        seed: Seed of the perturbation (ignored when ``noise`` is 0).
        height: Optional height in pixels for a non-square box (default ``size``).

    Returns:
        A bool array (height, width): one connected blob touching all four sides.

    Raises:
        ValueError: a bad argument (named in the message).
    """
    _check_args(noun, size, noise, seed)
    h = int(size) if height is None else int(height)
    if not 2 <= h <= 4096:
        raise ValueError(f"height={height!r} must be an int from 2 to 4096 pixels.")
    key = canonical_noun(noun)
    nz = round(float(noise), 4)
    return _glyph_cached(key, int(size), h, nz, int(seed) if nz > 0 else 0)


@lru_cache(maxsize=4096)
def template(noun: str) -> np.ndarray:
    """Canonical glyph of ``noun`` as a flat float32 vector of ``TEMPLATE_SIZE**2`` values in {0, 1}."""
    t = glyph(noun, TEMPLATE_SIZE).astype(np.float32).ravel()
    t.setflags(write=False)
    return t


_IDX_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def descriptor(mask: np.ndarray) -> np.ndarray:
    """A blob mask cropped to its box, resampled to ``TEMPLATE_SIZE`` squared (flat float32 vector).

    ``mask`` must already be cropped to the blob's bounding box (as ``scipy.ndimage.find_objects`` gives).
    """
    h, w = mask.shape
    idx = _IDX_CACHE.get((h, w))
    if idx is None:
        ri = ((np.arange(TEMPLATE_SIZE) + 0.5) * h / TEMPLATE_SIZE).astype(np.intp)
        ci = ((np.arange(TEMPLATE_SIZE) + 0.5) * w / TEMPLATE_SIZE).astype(np.intp)
        idx = (ri[:, None], ci[None, :])
        if len(_IDX_CACHE) > 4096:
            _IDX_CACHE.clear()
        _IDX_CACHE[(h, w)] = idx
    return mask[idx].astype(np.float32).ravel()


def match_scores(desc: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Intersection over union of one descriptor (or N x D descriptors) with K templates (K x D).

    Returns an array of IoUs in [0, 1], shape (K,) or (N, K).
    """
    inter = desc @ templates.T
    union = desc.sum(axis=-1, keepdims=desc.ndim > 1) + templates.sum(axis=1) - inter
    return np.asarray(inter / np.maximum(union, 1e-6))
