"""Pictures for humans: env frames with a side panel, contact sheets and animated GIFs (Pillow only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from poser_env.core.feedback import Feedback
from poser_env.core.spec import Spec

__all__ = ["contact_sheet", "render_frame", "save_gif"]

_PANEL_W = 280
_MIN_SIDE = 256
_BG = (250, 250, 250)
_INK = (20, 20, 20)
_OK = (20, 140, 40)
_BAD = (200, 30, 30)
_UNK = (140, 140, 140)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _canvas_image(canvas: np.ndarray | None, side: int) -> Image.Image:
    if canvas is None:
        img = Image.new("RGB", (side, side), (200, 200, 200))
        ImageDraw.Draw(img).text((8, side // 2 - 6), "empty canvas", fill=(90, 90, 90), font=_font())
        return img
    img = Image.fromarray(np.asarray(canvas, dtype=np.uint8))
    scale = max(1, -(-side // max(img.size)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def render_frame(
    canvas: np.ndarray | None,
    canvas_size: int = 128,
    *,
    panel: bool = True,
    prompt: str = "",
    command: str = "",
    expert: str = "",
    feedback: Feedback | None = None,
    spec: Spec | None = None,
) -> np.ndarray:
    """One frame: the canvas scaled up (nearest neighbour, at least 256 px) and an optional text panel.

    The panel lists the prompt, the last command and expert, and one line per assertion with a tick (holds),
    a cross (fails) or a question mark (unknown). Returns HxWx3 uint8.
    """
    side = max(_MIN_SIDE, canvas_size)
    img = _canvas_image(canvas, side)
    if not panel:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    h = max(img.height, 256)
    frame = Image.new("RGB", (img.width + _PANEL_W, h), _BG)
    frame.paste(img, (0, 0))
    d = ImageDraw.Draw(frame)
    font = _font()
    x, y = img.width + 8, 6
    lines: list[tuple[str, tuple[int, int, int]]] = []
    for chunk in textwrap.wrap(f"prompt: {prompt}", 44)[:4]:
        lines.append((chunk, _INK))
    if expert:
        lines.append((f"expert: {expert}"[:46], _INK))
    for chunk in textwrap.wrap(f"command: {command}", 44)[:2] if command else []:
        lines.append((chunk, _INK))
    if feedback is not None:
        lines.append((f"alignment {feedback.alignment:.2f}  fidelity {feedback.fidelity:.2f}", _INK))
        texts = {a.id: a.text for a in spec.assertions()} if spec is not None else {}
        for v in feedback.verdicts:
            mark, col = {"yes": ("+", _OK), "no": ("x", _BAD)}.get(v.holds, ("?", _UNK))
            lines.append((f"{mark} {texts.get(v.assertion_id, v.assertion_id)}"[:46], col))
    for text, col in lines:
        if y > h - 12:
            d.text((x, y), "...", fill=_INK, font=font)
            break
        d.text((x, y), text, fill=col, font=font)
        y += 12
    return np.asarray(frame, dtype=np.uint8)


def contact_sheet(
    steps: Sequence[dict[str, Any]], *, prompt: str = "", tile: int = 192, columns: int = 4
) -> Image.Image:
    """A grid of step images, each captioned with its step, expert, alignment and (shortened) feedback.

    ``steps`` are the env's trace records (keys ``image``, ``expert``, ``command``, ``feedback``,
    ``alignment``, ``error``); records without an image show the error.
    """
    n = max(1, len(steps))
    cols = min(columns, n)
    rows = -(-n // cols)
    cap_h = 52
    head = 30 if prompt else 0
    sheet = Image.new("RGB", (cols * tile, head + rows * (tile + cap_h)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    font = _font()
    if prompt:
        d.text((6, 4), textwrap.shorten(prompt, 30 * cols, placeholder="..."), fill=_INK, font=font)
    for i, rec in enumerate(steps):
        r, c = divmod(i, cols)
        x0, y0 = c * tile, head + r * (tile + cap_h)
        img = rec.get("image")
        if img is not None:
            sheet.paste(Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((tile, tile), Image.Resampling.NEAREST),
                        (x0, y0))
        else:
            d.rectangle((x0, y0, x0 + tile - 1, y0 + tile - 1), fill=(230, 210, 210))
        cap = [f"{rec.get('step', i + 1)}. {rec.get('expert', '')}"]
        if "alignment" in rec:
            cap[0] += f"  align {rec['alignment']:.2f}"
        msg = rec.get("error") or rec.get("critic_error") or rec.get("feedback") or rec.get("command", "")
        cap += textwrap.wrap(str(msg), tile // 6)[:3]
        for j, line in enumerate(cap):
            d.text((x0 + 3, y0 + tile + 2 + 12 * j), line, fill=_BAD if rec.get("error") else _INK, font=font)
    return sheet


def save_gif(frames: Sequence[np.ndarray], path: str | Path, *, fps: float = 2.0) -> Path:
    """Write frames (HxWx3 uint8, any sizes: padded to the largest) as a looping animated GIF."""
    if not frames:
        raise ValueError("frames is empty; record at least one frame (reset then render) before saving a GIF.")
    if fps <= 0:
        raise ValueError(f"fps={fps!r} must be > 0 frames per second.")
    w = max(f.shape[1] for f in frames)
    h = max(f.shape[0] for f in frames)
    imgs = []
    for f in frames:
        canvas = Image.new("RGB", (w, h), _BG)
        canvas.paste(Image.fromarray(np.asarray(f, dtype=np.uint8)), (0, 0))
        imgs.append(canvas)
    p = Path(path)
    imgs[0].save(p, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return p
