"""The SceneSim pixel critic: detections from pixels only, verdicts from the judge's own rule code.

:class:`SceneCritic` never reads a scene graph. Given an image and a spec it

1. recognises the background and style by comparing a coarse grid of the image with the clean background
   of every (background, style) pair (a trimmed mean absolute difference; objects are outliers), and
   estimates the pixel noise from the residual;
2. separates objects from the background: pixels that differ from the recognised clean background by more
   than a noise-adapted threshold, holes filled (objects carry a closed outline), grouped with
   ``scipy.ndimage.label`` (8-connected); inside each group, the pixels of the known outline colour give
   the object boxes, so noise discs (artifacts) that stick out of an object do not grow its box and objects
   an artifact bridged are split again (experts keep objects at least 2 pixels apart);
3. names each blob's colour and pattern from its interior pixels (the outline eroded away): every pixel is
   classified (through a 32-level RGB lookup table built in CIELAB) as the fill or accent tone of one of the
   11 colours as the recognised style paints them; the colour is the majority vote, the pattern is the
   canvas-aligned pattern (:func:`experts.sim.render.pattern_mask`) whose accent cells best agree with the
   pixels nearer the colour's accent than its fill (plain wins ties);
4. matches each blob against the glyph templates of the spec's nouns only (an open-vocabulary detector
   queried with the prompt's nouns): the label is the best intersection over union, the score rises with
   that IoU, its margin over the runner-up noun and the blob's colour purity (noise blobs and nouns the
   prompt does not mention score low and are dropped by the rules' 0.3 threshold);
5. applies :func:`poser_env.core.rules.evaluate` (the judge's rules) to the detections, then replaces the rules'
   confidences with calibrated ones from the measured margins.

Fidelity comes from the estimated pixel noise and the area of noise blobs; aesthetics from composition
(margins to the canvas edge, spacing, clutter, balance). ``noise > 0`` emulates a weaker critic: seeded
detection dropouts and verdict flips (reproducible for the same image, spec and seed).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from poser_env.core.appearance.glyphs import descriptor, match_scores, template
from poser_env.core.appearance.palette import (
    background_image,
    block_size,
    outline_color,
    pattern_mask,
    pattern_scale,
    tone_table,
)
from poser_env.core.color import srgb_to_lab
from poser_env.core.feedback import Critic, Detection, Feedback, Holds, Verdict
from poser_env.core.geometry import SIZE_FRACTION, size_of_box
from poser_env.core.rules import COUNTING_THRESHOLD, SCORE_THRESHOLD, assign_groups, evaluate
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, STYLES, Assertion, Spec
from poser_env.core.text import plural, stable_hash

__all__ = ["Blob", "SceneCritic", "rgb_to_lab"]

_PAIRS: tuple[tuple[str, str], ...] = tuple((b, s) for s in STYLES for b in BACKGROUNDS)
_GRID = 32  # side of the coarse grid used to recognise background and style
_EIGHT = np.ones((3, 3), dtype=bool)  # outlines are 8-connected rings


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0..255 to CIELAB (D65), float32 (:func:`poser_env.core.color.srgb_to_lab`)."""
    return srgb_to_lab(rgb).astype(np.float32)


@lru_cache(maxsize=8)
def _lut(style: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour index, is accent, CIELAB distance) for every 32-level RGB cell (32768 entries)."""
    tones, idx, acc = tone_table(style)
    q = (np.arange(32, dtype=np.float32) * 8 + 4)
    cells = np.stack(np.meshgrid(q, q, q, indexing="ij"), axis=-1).reshape(-1, 3)
    lab_cells = rgb_to_lab(cells)
    lab_tones = rgb_to_lab(tones)
    best = np.zeros(len(cells), dtype=np.intp)
    dist = np.full(len(cells), np.inf, dtype=np.float32)
    for j, t in enumerate(lab_tones):  # few tones, many cells: loop over tones, vectorise over cells
        d = ((lab_cells - t) ** 2).sum(axis=1)
        better = d < dist
        dist[better] = d[better]
        best[better] = j
    out = (idx[best].astype(np.int8), acc[best], np.sqrt(dist).astype(np.float32))
    for a in out:
        a.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _accent_lut(style: str) -> np.ndarray:
    """(11, 32768) bool: for each colour, whether each RGB cell is nearer its accent than its fill tones."""
    tones, idx, acc = tone_table(style)
    q = (np.arange(32, dtype=np.float32) * 8 + 4)
    cells = rgb_to_lab(np.stack(np.meshgrid(q, q, q, indexing="ij"), axis=-1).reshape(-1, 3))
    lab_tones = rgb_to_lab(tones)
    out = np.zeros((len(COLORS), len(cells)), dtype=bool)
    for ci in range(len(COLORS)):
        d_base = np.full(len(cells), np.inf, dtype=np.float32)
        d_acc = np.full(len(cells), np.inf, dtype=np.float32)
        for t, i, a in zip(lab_tones, idx, acc):
            if i != ci:
                continue
            d = ((cells - t) ** 2).sum(axis=1)
            if a:
                np.minimum(d_acc, d, out=d_acc)
            else:
                np.minimum(d_base, d, out=d_base)
        out[ci] = d_acc < d_base
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _layer_stack(width: int, height: int) -> tuple[np.ndarray, int]:
    """Coarse grids of every clean (background, style) image: (pairs, cells * 3) int16, and the stride."""
    stride = max(1, min(width, height) // _GRID)
    grids = [background_image(b, s, width, height)[::stride, ::stride].astype(np.int16).ravel() for b, s in _PAIRS]
    out = np.stack(grids)
    out.setflags(write=False)
    return out, stride


@lru_cache(maxsize=64)
def _background16(background: str, style: str, width: int, height: int) -> np.ndarray:
    out = background_image(background, style, width, height).astype(np.int16)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def _templates(nouns: tuple[str, ...]) -> np.ndarray:
    out = np.stack([template(n) for n in nouns])
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Blob:
    """One foreground component as the critic measured it (before matching nouns).

    Attributes:
        box: (x1, y1, x2, y2) pixels, y down.
        area: Filled area in pixels.
        color: Majority colour name; ``color_margin``: (top - runner-up votes) / interior pixels, in [0, 1].
        purity: Fraction of interior pixels voting for ``color`` (noise blobs score low), in [0, 1].
        pattern: Named pattern; ``pattern_margin``: distance of the accent statistics to the nearest
            decision threshold, in [0, 1].
        ious: IoU with each queried noun's template, in the spec's noun order.
    """

    box: tuple[float, float, float, float]
    area: int
    color: str
    color_margin: float
    purity: float
    pattern: str
    pattern_margin: float
    ious: tuple[float, ...]


def _erode(m: np.ndarray, steps: int = 1) -> np.ndarray:
    """``steps`` steps of 4-connected erosion; pixels on the mask's edge are dropped (border value 0).

    The same result as ``steps`` calls of ``scipy.ndimage.binary_erosion(m, structure=cross,
    border_value=0)``, done with numpy slices on a zero-padded copy (the masks are small crops, where
    scipy's per-call overhead dominates).
    """
    h, w = m.shape
    p = np.zeros((h + 2, w + 2), dtype=bool)
    core = p[1:-1, 1:-1]
    core[...] = m
    for _ in range(steps):
        c = p[:-2, 1:-1] & p[2:, 1:-1]
        c &= p[1:-1, :-2]
        c &= p[1:-1, 2:]
        core &= c
    return core.copy()


def _pattern(a: np.ndarray, interior: np.ndarray, sl: tuple[slice, slice], W: int, H: int) -> tuple[str, float]:
    """Pattern of a blob: the canvas-aligned pattern whose accent cells best agree with the accent pixels.

    ``interior`` is a crop-shaped bool mask of the interior pixels, ``a`` the 1-D bool flags (accent pixel
    of the blob's colour) of those pixels in row-major order (``mask[interior]``), ``sl`` the crop's slices
    in the canvas. Returns (pattern, margin in [0, 1]).
    """
    n = len(a)
    if n == 0:
        return "plain", 0.0
    agree = [float(np.count_nonzero(~a)) / n]
    for p in PATTERNS[1:]:
        e = pattern_mask(p, W, H)[sl][interior]
        agree.append(float(np.count_nonzero(a == e)) / n)
    order = sorted(range(len(agree)), key=lambda i: (-agree[i], i))  # ties: the plainer pattern
    best = int(order[0])
    margin = (agree[best] - agree[int(order[1])]) / max(1.0 - agree[best] + 0.05, 0.05)
    return PATTERNS[best], float(min(1.0, margin / 4.0))


def _certainty(margin: float, scale: float) -> float:
    """Map a non-negative evidence margin to a probability in [0.5, 1)."""
    return 0.5 + 0.5 * float(np.tanh(max(margin, 0.0) / scale))


class SceneCritic(Critic):
    """Pixel critic for SceneSim images (never sees the scene graph).

    Args:
        noise: 0..1, emulates a weaker critic: each detection is dropped with probability ``0.3 * noise``
            and each verdict flipped with probability ``0.25 * noise`` (0 = the full-strength critic).
        seed: Seed of that emulated noise (int >= 0); draws also depend on the image and spec, so the same
            (image, spec, seed) always gives the same feedback.

    Raises:
        ValueError: ``noise`` outside [0, 1] or a bad ``seed``.

    Example::

        critic = SceneCritic()
        fb = critic(image, spec)      # Feedback: verdicts, alignment, fidelity, aesthetics, text, detections
    """

    name = "scene"

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0.0 <= float(noise) <= 1.0:
            raise ValueError(f"noise={noise!r} must be a float in [0, 1] (0 = full-strength critic).")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise ValueError(f"seed={seed!r} must be an int >= 0.")
        self.noise = float(noise)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"SceneCritic(noise={self.noise}, seed={self.seed})"

    # ------------------------------------------------------------------ scene recognition
    def recognise(self, image: np.ndarray) -> tuple[str, str, float, float, float]:
        """Background and style of ``image`` (HxWx3 uint8, 64..512 a side) from pixel statistics.

        Returns:
            (background, style, background certainty, style certainty, noise level) where the certainties
            are in [0.5, 1] and the noise level is the median per-pixel |residual| summed over channels.
        """
        H, W = image.shape[:2]
        stack, stride = _layer_stack(W, H)
        sub = image[::stride, ::stride].astype(np.int16).ravel()
        a = np.abs(stack - sub)
        d = a[:, 0::3] + a[:, 1::3] + a[:, 2::3]
        cost = np.minimum(d, 120).mean(axis=1, dtype=np.float32)
        best = int(np.argmin(cost))
        bg, st = _PAIRS[best]
        other_bg = min(float(c) for (b, _), c in zip(_PAIRS, cost) if b != bg)
        other_st = min(float(c) for (_, s), c in zip(_PAIRS, cost) if s != st)
        noise = float(np.median(d[best]))
        c0 = float(cost[best])
        bg_cert = _certainty((other_bg - c0) / (c0 + 4.0), 0.3)
        st_cert = _certainty((other_st - c0) / (c0 + 4.0), 0.3)
        return bg, st, bg_cert, st_cert, noise

    def blobs(self, image: np.ndarray, nouns: Sequence[str]) -> tuple[list[Blob], dict[str, float]]:
        """Foreground blobs of ``image`` measured against the templates of ``nouns`` (see the module doc).

        Returns:
            (blobs, stats) where stats holds ``background``/``style`` certainties, ``noise`` and
            ``junk_area`` (fraction of the canvas in blobs too small to be objects) and ``blemish_factor``
            (fidelity factor in (0, 1] of small and impure blobs, i.e. artifacts).
        """
        H, W = image.shape[:2]
        bg, st, bg_cert, st_cert, noise = self.recognise(image)
        img16 = image.astype(np.int16)
        a = np.abs(img16 - _background16(bg, st, W, H))
        diff = a[..., 0] + a[..., 1] + a[..., 2]
        thr = max(70.0, 2.2 * noise + 40.0)
        fg = diff > thr
        # fill holes once for the whole canvas: background regions not 4-connected to the border
        hl, nh = ndimage.label(~fg)
        if nh > 1:
            border = np.zeros(nh + 1, dtype=bool)
            border[hl[0]] = True
            border[hl[-1]] = True
            border[hl[:, 0]] = True
            border[hl[:, -1]] = True
            border[0] = True
            fg = fg | ~border[hl]
        lab, n = ndimage.label(fg, structure=_EIGHT)
        stats: dict[str, float] = {"background_cert": bg_cert, "style_cert": st_cert, "noise": noise}
        stats["background"] = float(BACKGROUNDS.index(bg))
        stats["style"] = float(STYLES.index(st))
        if n == 0:
            stats["junk_area"] = 0.0
            stats["blemish_factor"] = 1.0
            return [], stats
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        side_min = 0.8 * SIZE_FRACTION["small"] * min(W, H)
        min_area = max(6, int(0.25 * side_min * side_min))
        temps = _templates(tuple(nouns)) if nouns else None
        out: list[Blob] = []
        junk = 0
        blemishes: list[int] = []
        ocol = outline_color(bg, st)
        ocol16 = ocol.astype(np.int16)
        o_thr = 75.0 + 2.0 * noise + (48.0 if st == "pixel art" else 0.0)
        min_side = 0.5 * SIZE_FRACTION["small"] * min(W, H)
        outline = self._outline_pixels(img16, fg, ocol16, o_thr)
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            if areas[k] < min_area:
                junk += int(areas[k])
                blemishes.append(int(areas[k]))
                continue
            comp = lab[sl] == k
            filled = comp
            boxes = self._outline_boxes(outline[sl] & comp, min_side)
            if not boxes:
                boxes = [(0, 0, comp.shape[1], comp.shape[0])]
            for bx1, by1, bx2, by2 in boxes:
                sub = filled[by1:by2, bx1:bx2]
                rows = np.flatnonzero(sub.any(axis=1))
                cols_ = np.flatnonzero(sub.any(axis=0))
                if rows.size == 0:
                    continue
                by1, by2 = by1 + int(rows[0]), by1 + int(rows[-1]) + 1
                bx1, bx2 = bx1 + int(cols_[0]), bx1 + int(cols_[-1]) + 1
                sub = filled[by1:by2, bx1:bx2]
                gsl = (slice(sl[0].start + by1, sl[0].start + by2), slice(sl[1].start + bx1, sl[1].start + bx2))
                blob = self._measure(image[gsl], sub, gsl, st, temps, W, H)
                if blob is not None:
                    out.append(blob)
                    if blob.purity < 0.5:  # noise, not paint: an artifact
                        blemishes.append(blob.area)
        stats["junk_area"] = junk / float(H * W)
        # fidelity factor of the blemishes, as the judge weighs artifacts (12% for one covering 1% or more)
        f = 1.0
        for area in blemishes:
            f *= 1.0 - 0.12 * min(1.0, float(np.sqrt(area / (0.01 * W * H))))
        stats["blemish_factor"] = f
        return out, stats

    @staticmethod
    def _outline_pixels(img16: np.ndarray, fg: np.ndarray, ocol16: np.ndarray, o_thr: float) -> np.ndarray:
        """Foreground pixels of the outline colour that have an outline-like 8-neighbour (canvas-sized bool).

        Isolated outline-like pixels are noise. Computed once per image: an 8-neighbour of a foreground
        pixel that is itself foreground lies in the same 8-connected component, so restricting this mask
        to one component equals computing it inside that component's crop.
        """
        a = np.abs(img16 - ocol16)  # img16: the image as int16 (H, W, 3)
        o = ((a[..., 0] + a[..., 1] + a[..., 2]) < o_thr) & fg
        nb = np.zeros(o.shape, dtype=bool)
        nb[1:] |= o[:-1]
        nb[:-1] |= o[1:]
        nb[:, 1:] |= o[:, :-1]
        nb[:, :-1] |= o[:, 1:]
        nb[1:, 1:] |= o[:-1, :-1]
        nb[:-1, :-1] |= o[1:, 1:]
        nb[1:, :-1] |= o[:-1, 1:]
        nb[:-1, 1:] |= o[1:, :-1]
        o &= nb
        return o

    @staticmethod
    def _outline_boxes(o: np.ndarray, min_side: float) -> list[tuple[int, int, int, int]]:
        """Boxes (x1, y1, x2, y2, crop pixels) of the outline rings inside one foreground component.

        ``o`` is the component's crop of :meth:`_outline_pixels` restricted to the component. Objects carry
        a one-pixel outline of a known colour; artifacts (noise discs) do not. Boxes taken from outline
        pixels ignore noise that sticks out of an object, and split objects that an artifact bridged. Arcs
        of one ring broken by noise are merged when their boxes are closer than 2 pixels.
        """
        rows = np.flatnonzero(o.any(axis=1))
        cols = np.flatnonzero(o.any(axis=0))
        if rows.size == 0:
            return []
        if rows[-1] - rows[0] + 1 == rows.size and cols[-1] - cols[0] + 1 == cols.size:
            # no empty row or column inside: one ring (objects are >= 2 px apart in x or in y)
            box1 = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            if max(box1[2] - box1[0], box1[3] - box1[1]) < min_side:
                return []
            return [box1]
        lab, n = ndimage.label(o, structure=_EIGHT)
        if n == 0:
            return []
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(lab) if s is not None]
        counts = np.bincount(lab.ravel())[1:]
        sizes = [int(c) for c in counts]
        merged = True
        while merged and len(boxes) > 1:
            merged = False
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    bi, bj = boxes[i], boxes[j]
                    # experts keep objects >= 2 px apart: closer boxes belong to one object
                    if bi[0] - bj[2] < 2 and bj[0] - bi[2] < 2 and bi[1] - bj[3] < 2 and bj[1] - bi[3] < 2:
                        boxes[i] = [min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3])]
                        sizes[i] += sizes[j]
                        del boxes[j], sizes[j]
                        merged = True
                        break
                if merged:
                    break
        return [
            (b[0], b[1], b[2], b[3])
            for b, n_px in zip(boxes, sizes)
            if n_px >= 6 and max(b[2] - b[0], b[3] - b[1]) >= min_side
        ]

    @staticmethod
    def _measure(
        pixels: np.ndarray,
        filled: np.ndarray,
        sl: tuple[slice, slice],
        style: str,
        temps: np.ndarray | None,
        W: int,
        H: int,
    ) -> Blob | None:
        """Colour, pattern and noun IoUs of one blob (``pixels`` and ``filled`` cropped to its box)."""
        col_lut, _acc, _dist = _lut(style)
        acc_of = _accent_lut(style)
        interior = _erode(filled, block_size(W, H) if style == "pixel art" else pattern_scale(W, H))  # outline
        if np.count_nonzero(interior) < 4:
            interior = _erode(filled)
            if np.count_nonzero(interior) < 4:
                interior = filled
        px = pixels[interior] >> 3
        if len(px) == 0:
            return None
        pi = px.astype(np.intp)
        kk = (pi[:, 0] << 10) | (pi[:, 1] << 5) | pi[:, 2]
        cols = col_lut[kk]
        votes = np.bincount(cols, minlength=len(COLORS))
        order = np.argsort(votes)[::-1]
        ci = int(order[0])
        total = len(kk)
        purity = float(votes[ci]) / total
        cmargin = float(votes[ci] - votes[order[1]]) / total
        pattern, pmargin = _pattern(acc_of[ci][kk], interior, sl, W, H)
        ious = tuple(float(v) for v in match_scores(descriptor(filled), temps)) if temps is not None else ()
        box = (float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop))
        return Blob(box, int(np.count_nonzero(filled)), COLORS[ci], cmargin, purity, pattern, pmargin, ious)

    # ------------------------------------------------------------------ detection
    @staticmethod
    def _score(blob: Blob) -> tuple[int, float]:
        """(noun index, detection score in [0, 1]) of a blob."""
        ious = blob.ious
        if not ious:
            return -1, 0.0
        j = max(range(len(ious)), key=ious.__getitem__)  # the first of equal maxima, as np.argmax
        best = ious[j]
        second = sorted(ious)[-2] if len(ious) > 1 else 0.0
        shape = min(max((best - 0.55) / 0.2, 0.0), 1.0)
        margin = min(max((best - second) / 0.08, 0.0), 1.0)
        purity = min(max((blob.purity - 0.35) / 0.3, 0.0), 1.0)
        return j, float(shape * (0.55 + 0.45 * margin) * purity)

    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        spec.require_closed("SceneSim")  # SceneSim draws and judges only the closed vocabulary: say so by name
        t0 = time.perf_counter()
        H, W = image.shape[:2]
        if not (64 <= H <= 512 and 64 <= W <= 512):
            raise ValueError(f"image shape={image.shape} must be 64..512 pixels a side (SceneSim canvases).")
        nouns = spec.nouns
        blobs, stats = self.blobs(image, nouns)
        bg = BACKGROUNDS[int(stats["background"])]
        st = STYLES[int(stats["style"])]
        rng = None
        if self.noise > 0:
            digest = stable_hash(self.seed, image.tobytes(), spec.to_json())
            rng = np.random.default_rng(digest)
        dets: list[Detection] = []
        det_blobs: list[Blob] = []
        for b in blobs:
            j, score = self._score(b)
            if j < 0:
                continue
            if rng is not None and rng.random() < 0.3 * self.noise:
                continue
            dets.append(
                Detection(label=nouns[j], box=b.box, score=round(score, 6), color=b.color, pattern=b.pattern,
                          size=size_of_box(b.box, W, H))
            )
            det_blobs.append(b)
        verdicts = evaluate(spec, dets, background=bg, style=st, width=W, height=H)
        assertions = spec.assertions()  # built once per call (it walks the whole spec)
        verdicts = self._calibrate(spec, verdicts, dets, det_blobs, stats, W, H, assertions)
        if rng is not None:
            flipped = []
            for v in verdicts:
                if v.holds != "unknown" and rng.random() < 0.25 * self.noise:
                    holds: Holds = "no" if v.ok else "yes"
                    v = Verdict(v.assertion_id, holds, 1.0 - v.confidence, v.reason + " (noisy critic)", v.kind)
                flipped.append(v)
            verdicts = tuple(flipped)
        alignment = Feedback.alignment_of(verdicts)
        fidelity = self._fidelity(stats)
        aesthetics = self._aesthetics(dets, W, H)
        text = self._text(spec, verdicts, dets, bg, st, assertions)
        return Feedback(
            verdicts=verdicts,
            alignment=alignment,
            fidelity=fidelity,
            aesthetics=aesthetics,
            text=text,
            detections=tuple(dets),
            background=bg,
            style=st,
            metadata={
                "critic": self.name,
                "noise_level": stats["noise"],
                "blobs": len(blobs),
                "seconds": time.perf_counter() - t0,
            },
        )

    # ------------------------------------------------------------------ confidence
    def _calibrate(
        self,
        spec: Spec,
        verdicts: Sequence[Verdict],
        dets: Sequence[Detection],
        blobs: Sequence[Blob],
        stats: dict[str, float],
        W: int,
        H: int,
        assertions: Sequence[Assertion] | None = None,
    ) -> tuple[Verdict, ...]:
        """Replace the rules' confidences by P(holds) from measured margins (see the module doc)."""
        thr = COUNTING_THRESHOLD if spec.tag == "counting" else SCORE_THRESHOLD
        groups = self._groups(spec, dets, W, H)
        by_label: dict[str, list[int]] = {}
        for i, d in enumerate(dets):
            by_label.setdefault(d.label, []).append(i)

        def det_margin(noun: str, count: int) -> float:
            """How clearly the count of ``noun`` is on its side of ``count`` (0 = on the threshold)."""
            scores = sorted((dets[i].score for i in by_label.get(noun, [])), reverse=True)
            kept = [s for s in scores if s > thr]
            dropped = [s for s in scores if s <= thr]
            if len(kept) >= count:
                m = kept[count - 1] - thr
                # an extra near-threshold detection makes "at least" certain but exactness doubtful: ignore
                return float(m)
            return float(thr - (dropped[0] if dropped else 0.0))

        def attr_margin(kind: str, group: list[int]) -> float:
            ms = []
            for i in group:
                b = blobs[i]
                if kind == "color":
                    ms.append(b.color_margin)
                elif kind == "pattern":
                    ms.append(b.pattern_margin)
                else:
                    x1, y1, x2, y2 = b.box
                    side = ((x2 - x1) + (y2 - y1)) / 2.0
                    fr = sorted(SIZE_FRACTION.values())
                    cuts = [(a + c) / 2.0 * min(W, H) for a, c in itertools.pairwise(fr)]
                    ms.append(min(abs(side - c) for c in cuts) / 1.5)
            return float(min(ms)) if ms else 0.0

        out = []
        for a, v in zip(spec.assertions() if assertions is None else assertions, verdicts):
            if v.holds == "unknown":
                out.append(v)
                continue
            if a.kind in ("exists", "count"):
                assert a.entity is not None
                e = spec.entities[a.entity]
                cert = _certainty(det_margin(e.noun, e.count), 0.09)
            elif a.kind == "exclusion":
                assert a.value is not None and a.count is not None
                cert = _certainty(det_margin(a.value, a.count), 0.09)
            elif a.kind in ("color", "pattern", "size"):
                assert a.entity is not None
                e = spec.entities[a.entity]
                idx = groups[a.entity]
                if len(idx) < e.count:
                    cert = _certainty(det_margin(e.noun, e.count), 0.09)
                else:
                    cert = min(
                        _certainty(det_margin(e.noun, e.count), 0.09),
                        _certainty(attr_margin(a.kind, idx), 0.15),
                    )
            elif a.kind == "relation":
                assert a.entity is not None and a.reference is not None
                s_idx = groups[a.entity]
                r_idx = groups[a.reference]
                m = 1.0
                for i in s_idx:
                    for j in r_idx:
                        m = min(m, self._relation_margin(dets[i].box, dets[j].box))
                es, er = spec.entities[a.entity], spec.entities[a.reference]
                cert = min(
                    _certainty(m, 0.05),
                    _certainty(det_margin(es.noun, es.count), 0.09),
                    _certainty(det_margin(er.noun, er.count), 0.09),
                )
            elif a.kind == "background":
                cert = stats["background_cert"]
            else:
                cert = stats["style_cert"]
            cert = min(max(cert, 0.5), 0.995)
            conf = cert if v.ok else 1.0 - cert
            out.append(Verdict(v.assertion_id, v.holds, round(conf, 6), v.reason, v.kind))
        return tuple(out)

    @staticmethod
    def _groups(spec: Spec, dets: Sequence[Detection], W: int, H: int) -> list[list[int]]:
        """Indices into ``dets`` of the detections the rules count for each entity group."""
        thr = COUNTING_THRESHOLD if spec.tag == "counting" else SCORE_THRESHOLD
        groups = assign_groups(spec, dets, threshold=thr, width=W, height=H)
        ids = {id(d): i for i, d in enumerate(dets)}
        return [[ids[id(d)] for d in g] for g in groups]

    @staticmethod
    def _relation_margin(box_a: Sequence[float], box_b: Sequence[float]) -> float:
        """Distance of GenEval's normalised offsets from their 0.5 decision thresholds (min over axes)."""
        a = np.asarray(box_a, dtype=np.float64)
        b = np.asarray(box_b, dtype=np.float64)
        off = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2
        dims = (a[2:] - a[:2]) + (b[2:] - b[:2])
        rev = np.maximum(np.abs(off) - 0.1 * dims, 0.0) * np.sign(off)
        norm = float(np.linalg.norm(off))
        if norm < 1e-6:
            return 0.0
        return float(np.min(np.abs(np.abs(rev / norm) - 0.5)))

    # ------------------------------------------------------------------ fidelity, aesthetics, text
    @staticmethod
    def _fidelity(stats: dict[str, float]) -> float:
        """Image quality in [0, 1]: 1 - pixel noise (residual vs the clean background) times the blemish factor.

        The renderer's noise sigma is ``24 * (1 - quality)``; the median summed |residual| of three channels
        is about ``2.2 * sigma``, hence ``quality ~ 1 - noise / 53``.
        """
        quality = 1.0 - max(0.0, stats["noise"] - 1.0) / 53.0
        return float(np.clip(quality * stats["blemish_factor"], 0.0, 1.0))

    @staticmethod
    def _aesthetics(dets: Sequence[Detection], W: int, H: int) -> float:
        if not dets:
            return 0.0
        boxes = np.asarray([d.box for d in dets], dtype=np.float64)
        side = float(min(W, H))
        # margins: objects touching the canvas edge look cut off
        edge = np.minimum.reduce([boxes[:, 0], boxes[:, 1], W - boxes[:, 2], H - boxes[:, 3]]) / side
        margin_score = float(np.mean(np.clip(edge / 0.04, 0.0, 1.0)))
        # spacing: nearest-neighbour gap between boxes relative to the canvas
        if len(boxes) > 1:
            gx = np.maximum(boxes[None, :, 0] - boxes[:, None, 2], boxes[:, None, 0] - boxes[None, :, 2])
            gy = np.maximum(boxes[None, :, 1] - boxes[:, None, 3], boxes[:, None, 1] - boxes[None, :, 3])
            gap = np.maximum(np.maximum(gx, gy), 0.0) / side
            np.fill_diagonal(gap, np.inf)
            spacing = float(np.mean(np.clip(gap.min(axis=1) / 0.05, 0.0, 1.0)))
        else:
            spacing = 1.0
        # clutter: covered fraction of the canvas beyond 35% is crowded
        cover = float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()) / (W * H)
        clutter = float(np.clip(1.0 - max(0.0, cover - 0.35) / 0.35, 0.0, 1.0))
        # balance: centre of mass near the canvas centre
        cx = float(((boxes[:, 0] + boxes[:, 2]) / 2).mean()) / W - 0.5
        cy = float(((boxes[:, 1] + boxes[:, 3]) / 2).mean()) / H - 0.5
        balance = 1.0 - min(1.0, 2.0 * float(np.hypot(cx, cy)))
        return float(np.clip(0.3 * margin_score + 0.3 * spacing + 0.2 * clutter + 0.2 * balance, 0.0, 1.0))

    @staticmethod
    def _text(spec: Spec, verdicts: Sequence[Verdict], dets: Sequence[Detection], bg: str, st: str,
              assertions: Sequence[Assertion] | None = None) -> str:
        parts: list[str] = []
        thr = COUNTING_THRESHOLD if spec.tag == "counting" else SCORE_THRESHOLD
        kept: dict[str, int] = {}
        for d in dets:
            if d.score > thr:
                kept[d.label] = kept.get(d.label, 0) + 1
        for a, v in zip(spec.assertions() if assertions is None else assertions, verdicts):
            if a.kind in ("exists", "count") and a.entity is not None:
                e = spec.entities[a.entity]
                n = kept.get(e.noun, 0)
                word = e.noun if e.count == 1 else plural(e.noun)
                if not v.ok:
                    parts.append(f"found {n} of {e.count} {word}")
            elif not v.ok and v.holds == "no":
                parts.append(v.reason)
            elif v.holds == "unknown":
                parts.append(f"could not tell whether {a.text}")
        head = f"{bg} background, {st} style, {len([d for d in dets if d.score > thr])} objects recognised"
        if not parts:
            return f"{head}; all {len(verdicts)} assertions hold"
        return f"{head}; " + "; ".join(parts)

