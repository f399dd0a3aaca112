"""SceneSim's appearance model: palette, outlines, style tones, pattern geometry and backgrounds.

This is the public description of what SceneSim's world looks like, shared by the renderer
(:mod:`experts.sim.render`, which draws scene graphs with it) and the pixel critic (:mod:`critic.scene`, which
models what a clean background and each colour look like in each style). It holds no scene: nothing here
reveals where anything is. Every function is deterministic and cached; returned arrays are read-only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from poser_env.core.spec import BACKGROUNDS, COLOR_RGB, COLORS, PATTERNS, STYLES
from poser_env.core.text import stable_hash

__all__ = [
    "ACCENT",
    "PALETTE",
    "PAPER",
    "background_image",
    "background_layer",
    "block_size",
    "finish_style",
    "hatch",
    "outline_color",
    "pattern_mask",
    "pattern_scale",
    "style_color",
    "texture_style",
    "tone_table",
]

RGB = tuple[int, int, int]

#: Fill colour of each named colour (sRGB 0..255).
PALETTE: dict[str, RGB] = dict(COLOR_RGB)
#: Second tone of patterned fills (stripes, dots, checks) of each colour.
ACCENT: dict[str, RGB] = {
    "red": (116, 14, 20),
    "orange": (150, 66, 6),
    "yellow": (166, 136, 10),
    "green": (14, 86, 30),
    "blue": (14, 36, 116),
    "purple": (70, 20, 100),
    "pink": (196, 60, 130),
    "brown": (66, 36, 14),
    "black": (104, 104, 112),
    "white": (188, 196, 210),
    "gray": (76, 76, 76),
}
#: Paper colour of the watercolor and sketch styles.
PAPER: RGB = (250, 246, 236)

_DARK_OUTLINE = np.array((22, 22, 26), dtype=np.float32)
_LIGHT_OUTLINE = np.array((236, 236, 242), dtype=np.float32)
_PENCIL = np.array((52, 52, 58), dtype=np.float32)
_WASH_OBJ = 0.3  # watercolor: fraction of paper mixed into object colours
_WASH_BG = 0.45  # ... into the background
_SKETCH_OBJ = 0.22
_SKETCH_BG = 0.8
_HATCH = 0.86  # sketch hatching darkens by this factor
_TEXTURE = 0.07  # watercolor paper texture amplitude (multiplicative)
_POSTER = 32.0  # pixel art: colours snap to multiples of 32


def pattern_scale(width: int, height: int) -> int:
    """Pattern cell unit in pixels: ``max(1, round(min(W, H) / 128))``."""
    return max(1, round(min(width, height) / 128))


def block_size(width: int, height: int) -> int:
    """Pixel-art block side in pixels: twice :func:`pattern_scale` (so pattern cells stay whole)."""
    return 2 * pattern_scale(width, height)


def _check_name(arg: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{arg}={value!r} must be one of {list(choices)}.")


def _check_size(width: int, height: int) -> None:
    for arg, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 64 <= int(v) <= 512:
            raise ValueError(f"{arg}={v!r} must be an int from 64 to 512 pixels.")


# ----------------------------------------------------------------------------------------- style colours
def style_color(rgb: np.ndarray, style: str, role: str = "object") -> np.ndarray:
    """Colours (..., 3) float as a style paints them, before textures: ``role`` is "object" or "background"."""
    _check_name("style", style, STYLES)
    rgb = np.asarray(rgb, dtype=np.float32)
    paper = np.asarray(PAPER, dtype=np.float32)
    if style == "watercolor":
        k = _WASH_OBJ if role == "object" else _WASH_BG
        return (1 - k) * rgb + k * paper
    if style == "sketch":
        k = _SKETCH_OBJ if role == "object" else _SKETCH_BG
        return (1 - k) * rgb + k * paper
    return rgb


def outline_color(background: str, style: str) -> np.ndarray:
    """Outline colour (3,) float32 of objects on ``background`` in ``style``."""
    _check_name("background", background, BACKGROUNDS)
    _check_name("style", style, STYLES)
    if style == "sketch":
        return _PENCIL
    if background == "night":
        return _LIGHT_OUTLINE
    if style == "watercolor":
        return np.array((60, 54, 72), dtype=np.float32)
    return _DARK_OUTLINE


@lru_cache(maxsize=8)
def tone_table(style: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every tone an object fill can take in ``style`` (for colour naming).

    Returns:
        (tones (N, 3) float32 sRGB, colour index (N,) into :data:`poser_env.core.spec.COLORS`,
        is_accent (N,) bool). Shading/texture variants are included as separate tones.
    """
    _check_name("style", style, STYLES)
    tones: list[np.ndarray] = []
    idx: list[int] = []
    acc: list[bool] = []
    factors: tuple[float, ...]
    if style == "photo":
        factors = (0.86, 0.93, 1.0, 1.06, 1.12)
    elif style == "sketch":
        factors = (_HATCH, 1.0)
    elif style == "watercolor":
        factors = (1 - _TEXTURE, 1.0, 1 + _TEXTURE)
    else:
        factors = (1.0,)
    for ci, name in enumerate(COLORS):
        for a, rgb in ((False, PALETTE[name]), (True, ACCENT[name])):
            base = style_color(np.asarray(rgb, dtype=np.float32), style)
            for f in factors:
                t = np.clip(base * f, 0, 255)
                if style == "pixel art":
                    t = np.round(t / _POSTER) * _POSTER
                tones.append(t)
                idx.append(ci)
                acc.append(a)
    out = (np.asarray(tones, dtype=np.float32), np.asarray(idx, dtype=np.intp), np.asarray(acc, dtype=bool))
    for arr in out:
        arr.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------- backgrounds
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of a 128-pixel canvas (so textures scale with the canvas)."""
    s = 128.0 / min(width, height)
    x = (np.arange(width, dtype=np.float32) + 0.5) * s
    y = (np.arange(height, dtype=np.float32) + 0.5) * s
    return x[None, :], y[:, None]


def _raw_background(name: str, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(stable_hash("background", name, width, height))
    x, y = _grid(width, height)
    ty = y / (128.0 * height / min(width, height))  # 0 at top, 1 at bottom
    img = np.empty((height, width, 3), dtype=np.float32)
    if name == "plain":
        img[:] = (223, 225, 229)
    elif name == "sky":
        top, bottom = np.array((64, 126, 214), np.float32), np.array((172, 210, 246), np.float32)
        img[:] = top + (bottom - top) * ty[..., None]
        for _ in range(3):
            cx, cy = rng.uniform(0, 128 * width / min(width, height)), rng.uniform(10, 70)
            rx, ry = rng.uniform(14, 26), rng.uniform(5, 9)
            d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
            a = np.clip(1.4 - d, 0.0, 1.0)[..., None] * 0.75
            img[:] = img * (1 - a) + 248.0 * a
    elif name == "grass":
        base = np.array((64, 138, 48), np.float32)
        cols = rng.normal(0, 1, size=width).astype(np.float32)
        cols = np.convolve(cols, np.ones(3, np.float32) / 3, mode="same").astype(np.float32)
        fine = rng.normal(0, 1, size=(height, width)).astype(np.float32)
        shade = (8 * cols[None, :] + 6 * fine - 18 * (1 - ty))[..., None]
        img[:] = base + shade * np.array((0.6, 1.0, 0.5), np.float32)
    elif name == "wooden table":
        base = np.array((168, 114, 64), np.float32)
        grain = np.sin(y * 0.9 + 2.5 * np.sin(x * 0.045 + y * 0.02)) * 10 + np.sin(y * 0.23) * 6
        planks = np.where((y % 32) < 1.0, -38.0, 0.0)
        img[:] = base + (grain + planks)[..., None] * np.array((1.0, 0.75, 0.5), np.float32)
    elif name == "night":
        top, bottom = np.array((6, 10, 32), np.float32), np.array((26, 32, 74), np.float32)
        img[:] = top + (bottom - top) * ty[..., None]
        n = width * height // 260
        ys, xs = rng.integers(0, height, n), rng.integers(0, width, n)
        img[ys, xs] = rng.uniform(150, 250, size=(n, 1)).astype(np.float32) * np.array((1.0, 1.0, 0.85), np.float32)
    elif name == "sand":
        base = np.array((226, 202, 150), np.float32)
        ripple = np.sin(y * 0.55 + 3 * np.sin(x * 0.07)) * 7
        fine = rng.normal(0, 5, size=(height, width)).astype(np.float32)
        img[:] = base + (ripple + fine)[..., None] * np.array((1.0, 0.95, 0.85), np.float32)
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"background={name!r} must be one of {list(BACKGROUNDS)}.")
    return np.clip(img, 0, 255)


@lru_cache(maxsize=16)
def _texture(width: int, height: int) -> np.ndarray:
    """Watercolor paper texture: multiplicative factor (H, W, 1) in [1 - 0.07, 1 + 0.07]."""
    rng = np.random.default_rng(stable_hash("paper", width, height))
    x, y = _grid(width, height)
    t = np.zeros((height, width), np.float32)
    for _ in range(5):
        fx, fy = rng.uniform(0.03, 0.12, size=2)
        t += np.sin(x * fx + rng.uniform(0, 6.3)) * np.sin(y * fy + rng.uniform(0, 6.3))
    t = t / max(float(np.abs(t).max()), 1e-6)
    out = (1.0 + _TEXTURE * t)[..., None].astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=16)
def hatch(width: int, height: int) -> np.ndarray:
    """Sketch hatching factor (H, W, 1): diagonal pencil lines every 4 units darken by 0.86."""
    s = pattern_scale(width, height)
    yy, xx = np.mgrid[0:height, 0:width]
    lines = ((xx + yy) // s) % 4 == 0
    out: np.ndarray = np.where(lines, np.float32(_HATCH), np.float32(1.0))[..., None].astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def background_layer(name: str, style: str, width: int, height: int) -> np.ndarray:
    """The background as the style paints it, before paper texture, degradation and pixel snapping."""
    raw = _raw_background(name, width, height)
    img = style_color(raw, style, role="background")
    if style == "sketch":
        yy, xx = np.mgrid[0:height, 0:width]
        s = pattern_scale(width, height)
        img = img * np.where(((xx - yy) // s) % 6 == 0, np.float32(0.95), np.float32(1.0))[..., None]
    if style == "pixel art":
        # ordered (2x2 Bayer) dithering at block level, the classic pixel-art look of gradients
        b = block_size(width, height)
        yy, xx = np.mgrid[0:height, 0:width]
        bayer = np.array([[0, 2], [3, 1]], dtype=np.float32)
        offset = (bayer[(yy // b) % 2, (xx // b) % 2] + 0.5) / 4.0 * _POSTER
        img = np.floor((img + offset[..., None]) / _POSTER) * _POSTER
    img = np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.float32)
    img.setflags(write=False)
    return img


def finish_style(img: np.ndarray, style: str, width: int, height: int) -> np.ndarray:
    if style == "pixel art":
        b = block_size(width, height)
        small = img[::b, ::b]
        img = np.repeat(np.repeat(small, b, axis=0), b, axis=1)[:height, :width]
        img = np.round(img / _POSTER) * _POSTER
    return img


def texture_style(img: np.ndarray, style: str, width: int, height: int) -> np.ndarray:
    if style == "watercolor":
        img *= _texture(width, height)
    return img


@lru_cache(maxsize=64)
def background_image(background: str, style: str, width: int = 128, height: int = 128) -> np.ndarray:
    """What an empty, clean scene with this background and style renders to (HxWx3 uint8, read-only)."""
    _check_name("background", background, BACKGROUNDS)
    _check_name("style", style, STYLES)
    _check_size(width, height)
    img = background_layer(background, style, width, height).copy()
    img = texture_style(img, style, width, height)
    img = finish_style(img, style, width, height)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------- objects
@lru_cache(maxsize=16)
def pattern_mask(pattern: str, width: int, height: int) -> np.ndarray:
    """Where the accent tone of ``pattern`` goes, on the whole canvas (H, W) bool (cells canvas-aligned).

    ``striped``: rows with ``(y // 2s) % 2 == 1``; ``dotted``: ``2s`` squares on a ``6s`` grid;
    ``checkered``: ``4s`` squares; ``s`` is :func:`pattern_scale`.
    """
    _check_name("pattern", pattern, PATTERNS)
    s = pattern_scale(width, height)
    yy, xx = np.mgrid[0:height, 0:width]
    if pattern == "plain":
        m = np.zeros((height, width), dtype=bool)
    elif pattern == "striped":
        m = (yy // (2 * s)) % 2 == 1
    elif pattern == "dotted":
        m = ((xx % (6 * s)) >= 2 * s) & ((xx % (6 * s)) < 4 * s) & ((yy % (6 * s)) >= 2 * s) & ((yy % (6 * s)) < 4 * s)
    else:
        m = ((xx // (4 * s)) + (yy // (4 * s))) % 2 == 1
    m = np.ascontiguousarray(m)
    m.setflags(write=False)
    return m
