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

__all__ = ["contact_sheet", "episode_frames", "render_frame", "save_gif"]

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


_LINE_H = 14  # caption line height in pixels (12 px font)


def _caption_font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled FreeType font at ``size`` px (Pillow >= 10.1), else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _wrap(d: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> list[str]:
    """Wrap ``text`` into lines that fit ``width`` pixels (measured with ``font``); nothing is cut off."""
    lines: list[str] = []
    for para in str(text).splitlines() or [""]:
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if d.textlength(trial, font=font) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
            while d.textlength(line, font=font) > width and len(line) > 1:  # one word wider than the column
                cut = len(line)
                while cut > 1 and d.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _mark(d: ImageDraw.ImageDraw, x: int, y: int, holds: str) -> None:
    """A tick (holds, green), a cross (fails, red) or a question mark (unknown, grey), drawn as lines (no glyph
    needed), in the 10 x 10 px box at (x, y)."""
    if holds == "yes":
        d.line([(x, y + 5), (x + 3, y + 9), (x + 9, y + 1)], fill=_OK, width=2)
    elif holds == "no":
        d.line([(x + 1, y + 1), (x + 9, y + 9)], fill=_BAD, width=2)
        d.line([(x + 1, y + 9), (x + 9, y + 1)], fill=_BAD, width=2)
    else:
        d.text((x + 2, y - 2), "?", fill=_UNK, font=_caption_font(12))


def _assertion_names(verdicts: dict[str, str], assertions: Sequence[str] | None) -> list[tuple[str, str]]:
    """(text, holds) per verdict: the assertion's text when ``assertions`` (the env's ``info["assertions"]``, in
    the order of the verdicts) has one per verdict, else the assertion id."""
    items = list(verdicts.items())
    if assertions is not None and len(assertions) == len(items):
        return [(str(t), str(h)) for t, (_, h) in zip(assertions, items)]
    return [(str(k), str(h)) for k, h in items]


def _step_caption(rec: dict[str, Any], i: int, n: int, width: int, d: ImageDraw.ImageDraw,
                  assertions: Sequence[str] | None) -> list[tuple[str, tuple[int, int, int], str | None]]:
    """Caption lines of one trace record: (text, colour, verdict mark or None)."""
    font = _caption_font()
    out: list[tuple[str, tuple[int, int, int], str | None]] = []
    head = f"step {rec.get('step', i + 1)}/{n}: {rec.get('expert', '')}"
    if "alignment" in rec:
        head += f"  (alignment {float(rec['alignment']):.2f})"
    out += [(t, _INK, None) for t in _wrap(d, head, width, font)]
    if rec.get("command"):
        out += [(t, (60, 60, 60), None) for t in _wrap(d, f"command: {rec['command']}", width, font)]
    err = rec.get("error") or rec.get("critic_error")
    if err:
        out += [(t, _BAD, None) for t in _wrap(d, f"error: {err}", width, font)]
    verdicts = rec.get("verdicts")
    if isinstance(verdicts, dict) and verdicts:
        for text, holds in _assertion_names(verdicts, assertions):
            for j, t in enumerate(_wrap(d, text, width - 14, font)):
                out.append((t, {"yes": _OK, "no": _BAD}.get(holds, _UNK), holds if j == 0 else ""))
    elif rec.get("feedback"):
        out += [(t, _INK, None) for t in _wrap(d, str(rec["feedback"]), width, font)]
    return out


def _draw_caption(d: ImageDraw.ImageDraw, x: int, y: int,
                  lines: Sequence[tuple[str, tuple[int, int, int], str | None]]) -> None:
    font = _caption_font()
    for j, (text, col, mark) in enumerate(lines):
        yy = y + _LINE_H * j
        if mark is None:
            d.text((x, yy), text, fill=col, font=font)
        else:
            if mark:
                _mark(d, x, yy + 2, mark)
            d.text((x + 14, yy), text, fill=col, font=font)


def contact_sheet(
    steps: Sequence[dict[str, Any]], *, prompt: str = "", tile: int = 192, columns: int = 4,
    assertions: Sequence[str] | None = None,
) -> Image.Image:
    """A grid of step images, each captioned in full (wrapped, never cut off): step, expert, alignment, the
    command, an error if any, and every assertion with a tick (holds), a cross (fails) or a question mark.

    ``steps`` are the env's trace records (keys ``image``, ``expert``, ``command``, ``feedback``, ``verdicts``,
    ``alignment``, ``error``); records without an image show a red tile and the error. ``assertions``: the
    assertions' texts in the order of the verdicts (the env's ``info["assertions"]`` at reset); without them the
    assertion ids are shown. ``tile``: side of a step image in pixels (>= 96). The sheet grows to fit the captions.
    """
    if tile < 96:
        raise ValueError(f"tile={tile!r} must be >= 96 pixels (captions need the width).")
    n = max(1, len(steps))
    cols = min(columns, n)
    rows = -(-n // cols)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    caps = [_step_caption(rec, i, len(steps), tile - 8, probe, assertions) for i, rec in enumerate(steps)]
    head_lines = _wrap(probe, f"prompt: {prompt}", cols * tile - 12, _caption_font(13)) if prompt else []
    head = _LINE_H * len(head_lines) + 10 if prompt else 0
    row_caps = [max((len(c) for c in caps[r * cols:(r + 1) * cols]), default=1) * _LINE_H + 8 for r in range(rows)]
    height = head + sum(tile + h for h in row_caps)
    sheet = Image.new("RGB", (cols * tile, height), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for j, line in enumerate(head_lines):
        d.text((6, 4 + _LINE_H * j), line, fill=_INK, font=_caption_font(13))
    y_row = head
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if i >= len(steps):
                break
            rec = steps[i]
            x0 = c * tile
            img = rec.get("image")
            if img is not None:
                sheet.paste(Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((tile, tile),
                                                                                     Image.Resampling.NEAREST),
                            (x0, y_row))
            else:
                d.rectangle((x0, y_row, x0 + tile - 1, y_row + tile - 1), fill=(230, 210, 210))
            d.rectangle((x0, y_row, x0 + tile - 1, y_row + tile + row_caps[r] - 1), outline=(220, 220, 220))
            _draw_caption(d, x0 + 4, y_row + tile + 4, caps[i])
        y_row += tile + row_caps[r]
    return sheet


def episode_frames(
    steps: Sequence[dict[str, Any]], *, prompt: str = "", side: int = 256, panel_width: int = 320,
    assertions: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """One frame per trace record for an animated GIF: the step's image (``side`` px, nearest neighbour) beside a
    caption panel (``panel_width`` px) with the prompt, the step's expert and command, and every assertion with a
    tick, a cross or a question mark; wrapped in full. All frames have the same size. Returns HxWx3 uint8 arrays.
    """
    if side < 64 or panel_width < 160:
        raise ValueError(f"side={side!r} must be >= 64 and panel_width={panel_width!r} >= 160 pixels.")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = []
    for i, rec in enumerate(steps):
        head = [(t, _INK, None) for t in _wrap(probe, f"prompt: {prompt}", panel_width - 16, _caption_font())]
        body = _step_caption(rec, i, len(steps), panel_width - 16, probe, assertions)
        texts.append([*head, ("", _INK, None), *body])
    h = max([side, *(_LINE_H * len(t) + 16 for t in texts)])
    frames = []
    for rec, lines in zip(steps, texts):
        frame = Image.new("RGB", (side + panel_width, h), _BG)
        img = rec.get("image")
        if img is not None:
            frame.paste(Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((side, side),
                                                                                 Image.Resampling.NEAREST), (0, 0))
        else:
            ImageDraw.Draw(frame).rectangle((0, 0, side - 1, side - 1), fill=(230, 210, 210))
        _draw_caption(ImageDraw.Draw(frame), side + 8, 8, lines)
        frames.append(np.asarray(frame, dtype=np.uint8))
    return frames


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
