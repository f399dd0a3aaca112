"""SceneSim's renderer: a :class:`~experts.sim.scene.Scene` to an HxWx3 uint8 image, fast and deterministic.

What is drawn, in order:

1. The background layer (cached per background, style and canvas size): ``plain`` (cool light gray),
   ``sky`` (blue gradient with clouds), ``grass`` (streaky green), ``wooden table`` (grained planks),
   ``night`` (dark blue gradient with stars), ``sand`` (rippled beige). Its textures are fixed per
   canvas size, never random per image.
2. Objects, back to front: the noun's glyph (:func:`poser_env.core.appearance.glyphs.glyph`) stretched to the object's
   pixel box (its float box rounded), filled with its colour from :data:`PALETTE` and its pattern
   (``striped``: horizontal bands, ``dotted``: a grid of square dots, ``checkered``: squares; the second
   tone is :data:`ACCENT` of the colour; pattern cells are aligned to the canvas), with an outline (dark;
   light on a night background; :func:`pattern_scale` pixels thick, a pixel-art block thick in
   ``pixel art``). ``photo`` shades objects (lit from the top left), ``sketch`` hatches them,
   ``watercolor`` and ``sketch`` wash their colours toward paper.
3. Artifacts: discs of uniform random colour blended in with their ``strength``.
4. ``watercolor``: a blotchy paper texture multiplies everything.
5. Degradation when ``scene.quality < 1``: a [1, 2, 1] blur mixed in at ``0.6 * (1 - quality)`` and
   Gaussian noise of sigma ``24 * (1 - quality)`` (0..255 scale): drawn from ``scene.seed``, or with
   ``scene.noise_bank`` a window of one fixed Gaussian field per canvas size placed and flipped by the seed.
6. ``pixel art``: the image snaps to blocks of :func:`block_size` pixels and colours to multiples of 32
   (backgrounds are drawn with ordered dithering).

Every random draw comes from ``np.random.default_rng`` seeded by ``scene.seed`` (noise, artifacts) or by
``stable_hash`` of fixed keys (textures, glyph perturbations: an object's shape depends on its noun, noise
and pixel box, so it stays put when other objects are edited; an object with ``glyph_variant`` k >= 0 takes the
noun's shared variant k instead: one :data:`VARIANT_MASTER_SIZE` raster per noun, noise and k, resampled to its
box). Same scene -> byte-identical image in every
process.

The critic (:mod:`critic.scene`) may use :func:`background_image`, :func:`tone_table` and the pattern
geometry to model what a clean background and the palette look like in each style; it never sees a scene.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from experts.sim.scene import Scene, SceneObject
from poser_env.core.appearance.glyphs import clear_cache as clear_glyph_cache
from poser_env.core.appearance.glyphs import glyph
from poser_env.core.appearance.palette import (
    ACCENT,
    PALETTE,
    background_layer,
    block_size,
    finish_style,
    hatch,
    outline_color,
    pattern_mask,
    pattern_scale,
    style_color,
    texture_style,
)
from poser_env.core.text import stable_hash

__all__ = ["VARIANT_MASTER_SIZE", "cache_info", "clear_cache", "render"]


def clear_cache() -> None:
    """Forget every cached glyph layer (benchmarks time cold glyphs; pixels never depend on the cache)."""
    _glyph_layers.cache_clear()
    _variant_layers.cache_clear()
    _variant_master.cache_clear()
    clear_glyph_cache()


def cache_info() -> dict[str, int]:
    """Sizes of the renderer's glyph caches: ``variant_masters`` (rasterised shape variants, one per noun, noise
    and variant), ``variant_layers`` (their resamplings to pixel boxes) and ``object_layers`` (per-object glyphs
    of the continuous mode)."""
    return {"variant_masters": _variant_master.cache_info().currsize,
            "variant_layers": _variant_layers.cache_info().currsize,
            "object_layers": _glyph_layers.cache_info().currsize}


_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connected

@lru_cache(maxsize=4096)
def _glyph_layers(
    noun: str, w: int, h: int, noise: float, seed: int, thickness: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, outline) of a glyph in a w x h box: the outline is the mask's inner boundary, ``thickness`` px."""
    m = glyph(noun, w, height=h, noise=noise, seed=seed)
    # 4-connected erosion, pixels on the box edge dropped: the outline is what erosion removes
    inner = ndimage.binary_erosion(m, structure=_CROSS, iterations=thickness, border_value=0)
    outline = m & ~inner
    outline.setflags(write=False)
    return m, outline


#: Side in pixels of the one raster of each glyph variant (``SceneObject.glyph_variant`` >= 0) that boxes resample.
VARIANT_MASTER_SIZE = 96


@lru_cache(maxsize=4096)
def _variant_master(noun: str, noise: float, variant: int) -> np.ndarray:
    """The raster of variant ``variant`` of ``noun`` at ``noise``, VARIANT_MASTER_SIZE squared (read-only)."""
    seed = stable_hash("glyph-variant", noun, variant) & 0x7FFFFFFF if noise > 0 else 0
    return glyph(noun, VARIANT_MASTER_SIZE, noise=noise, seed=seed)


@lru_cache(maxsize=8192)
def _variant_layers(
    noun: str, w: int, h: int, noise: float, variant: int, thickness: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, outline) of a shared glyph variant in a w x h box: the master raster resampled (nearest pixel
    centre) and stretched to touch all four sides, the outline as in :func:`_glyph_layers`."""
    master = _variant_master(noun, noise, variant)
    s = master.shape[0]
    ri = ((np.arange(h) + 0.5) * s / h).astype(np.intp)
    ci = ((np.arange(w) + 0.5) * s / w).astype(np.intp)
    m = master[ri[:, None], ci[None, :]]
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows[0] > 0 or rows[-1] < h - 1 or cols[0] > 0 or cols[-1] < w - 1:  # a thin tip fell between samples
        m = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        ri = ((np.arange(h) + 0.5) * m.shape[0] / h).astype(np.intp)
        ci = ((np.arange(w) + 0.5) * m.shape[1] / w).astype(np.intp)
        m = m[ri[:, None], ci[None, :]]
    m = np.ascontiguousarray(m)
    inner = ndimage.binary_erosion(m, structure=_CROSS, iterations=thickness, border_value=0)
    outline = m & ~inner
    m.setflags(write=False)
    outline.setflags(write=False)
    return m, outline


@lru_cache(maxsize=256)
def _shade(w: int, h: int) -> np.ndarray:
    """Photo lighting factor (h, w, 1): 1.12 at the top-left corner down to 0.86 at the bottom-right."""
    u = (np.arange(w, dtype=np.float32) + 0.5) / w
    v = (np.arange(h, dtype=np.float32) + 0.5) / h
    f = 1.12 - 0.26 * (u[None, :] + v[:, None]) / 2.0
    out = f[..., None].astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def _fill_tones(color: str, style: str) -> tuple[np.ndarray, np.ndarray]:
    base = style_color(np.asarray(PALETTE[color], np.float32), style)
    acc = style_color(np.asarray(ACCENT[color], np.float32), style)
    return base, acc


def _pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    if x2 <= x1:
        x2 = x1 + 1
    if y2 <= y1:
        y2 = y1 + 1
    return x1, y1, x2, y2


def _draw_object(img: np.ndarray, o: SceneObject, scene: Scene, outline: np.ndarray) -> None:
    W, H = scene.width, scene.height
    x1, y1, x2, y2 = _pixel_box(o.box, W, H)
    w, h = x2 - x1, y2 - y1
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    noise = round(float(min(max(o.glyph_noise, 0.0), 1.0)), 4)
    thick = block_size(W, H) if scene.style == "pixel art" else pattern_scale(W, H)
    if o.glyph_variant >= 0:  # a shared variant: one raster per (noun, noise, variant), resampled to the box
        mask, edge = _variant_layers(o.noun, min(w, 4096), min(h, 4096), noise, o.glyph_variant, thick)
    else:
        gseed = stable_hash("glyph-seed", o.noun, x1, y1, x2, y2) & 0x7FFFFFFF if noise > 0 else 0
        mask, edge = _glyph_layers(o.noun, min(w, 4096), min(h, 4096), noise, gseed, thick)
    sl_g = (slice(cy1 - y1, cy2 - y1), slice(cx1 - x1, cx2 - x1))
    mask, edge = mask[sl_g], edge[sl_g]
    base, acc = _fill_tones(o.color, scene.style)
    region = img[cy1:cy2, cx1:cx2]
    if o.pattern == "plain":
        fill = np.broadcast_to(base, region.shape)
    else:
        pm = pattern_mask(o.pattern, W, H)[cy1:cy2, cx1:cx2]
        fill = np.where(pm[..., None], acc, base)
    if scene.style == "photo":
        fill = fill * _shade(w, h)[sl_g]
    elif scene.style == "sketch":
        fill = fill * hatch(W, H)[cy1:cy2, cx1:cx2]
    m3 = mask[..., None]
    region[...] = np.where(m3, fill, region)
    region[edge] = outline


def _draw_artifacts(img: np.ndarray, scene: Scene) -> None:
    W, H = scene.width, scene.height
    for k, a in enumerate(scene.artifacts):
        r = max(float(a.radius), 0.0)
        s = min(max(float(a.strength), 0.0), 1.0)
        if r <= 0 or s <= 0:
            continue
        x1, x2 = max(int(np.floor(a.x - r)), 0), min(int(np.ceil(a.x + r)) + 1, W)
        y1, y2 = max(int(np.floor(a.y - r)), 0), min(int(np.ceil(a.y + r)) + 1, H)
        if x2 <= x1 or y2 <= y1:
            continue
        rng = np.random.default_rng([scene.seed & 0xFFFFFFFFFFFFFFFF, int(a.seed) & 0xFFFFFFFF, k, 1])
        yy = np.arange(y1, y2, dtype=np.float32)[:, None] + 0.5
        xx = np.arange(x1, x2, dtype=np.float32)[None, :] + 0.5
        inside = ((xx - a.x) ** 2 + (yy - a.y) ** 2 <= r * r)[..., None]
        noise = rng.uniform(0, 255, size=(y2 - y1, x2 - x1, 3)).astype(np.float32)
        region = img[y1:y2, x1:x2]
        region[...] = np.where(inside, region * (1 - s) + noise * s, region)


def _blur_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """``(prev + 2 * x + next) * 0.25`` along ``axis`` with edges replicated (float32, the same operations in the
    same order as on an edge-padded copy, so bit-identical to it, without the padded copy)."""
    t = x * np.float32(2)
    lo = [slice(None)] * x.ndim
    hi = [slice(None)] * x.ndim
    # prev + 2x (addition is commutative in IEEE arithmetic: 2x + prev has the same bits)
    lo[axis], hi[axis] = slice(1, None), slice(None, -1)
    t[tuple(lo)] += x[tuple(hi)]
    lo[axis] = slice(0, 1)
    t[tuple(lo)] += x[tuple(lo)]
    # ... + next
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    t[tuple(lo)] += x[tuple(hi)]
    lo[axis] = slice(-1, None)
    t[tuple(lo)] += x[tuple(lo)]
    t *= np.float32(0.25)
    return t


def _degrade(img: np.ndarray, scene: Scene) -> np.ndarray:
    d = 1.0 - float(scene.quality)
    if d <= 0:
        return img
    a = np.float32(min(0.6 * d, 0.6))
    # separable [1, 2, 1] / 4 blur, edges replicated
    b = _blur_axis(_blur_axis(img, 0), 1)
    b *= a
    img *= np.float32(1) - a
    img += b
    sigma = np.float32(24.0 * d)
    if scene.noise_bank:
        noise = _noise_window(scene.seed, scene.width, scene.height) * sigma
    else:
        rng = np.random.default_rng([scene.seed & 0xFFFFFFFFFFFFFFFF, 2])
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= sigma
    img += noise
    return img


@lru_cache(maxsize=16)
def _noise_field(width: int, height: int) -> np.ndarray:
    """A fixed standard-normal float32 field (2 * height, 2 * width, 3) of one canvas size (read-only)."""
    rng = np.random.default_rng(stable_hash("noise-bank", width, height))
    f = rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
    f.setflags(write=False)
    return f


def _noise_window(seed: int, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) window of :func:`_noise_field`, its offset and flips from ``stable_hash(seed)``."""
    h = stable_hash("noise-window", int(seed), bits=64)
    dy, dx = h % height, (h >> 20) % width
    win = _noise_field(width, height)[dy : dy + height, dx : dx + width]
    return win[:: -1 if h >> 40 & 1 else 1, :: -1 if h >> 41 & 1 else 1]


def render(scene: Scene) -> np.ndarray:
    """Render ``scene`` to an HxWx3 uint8 RGB image (H = ``scene.height``, W = ``scene.width``).

    Deterministic: the same scene gives a byte-identical image in every process.

    Raises:
        ValueError: ``scene`` is not a :class:`~experts.sim.scene.Scene`.
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be an experts.sim.scene.Scene, got {type(scene).__name__}.")
    W, H = scene.width, scene.height
    img = background_layer(scene.background, scene.style, W, H).copy()
    outline = outline_color(scene.background, scene.style)
    for o in scene.objects:
        _draw_object(img, o, scene, outline)
    if scene.artifacts:
        _draw_artifacts(img, scene)
    img = texture_style(img, scene.style, W, H)
    img = _degrade(img, scene)
    img = finish_style(img, scene.style, W, H)
    np.clip(img + 0.5, 0, 255, out=img)
    return img.astype(np.uint8)
