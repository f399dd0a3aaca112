"""SceneSim glyphs and renderer: determinism, visible backgrounds/styles/patterns, sizes, open vocabulary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from experts.sim.render import render
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.appearance.glyphs import descriptor, glyph, match_scores, template
from poser_env.core.appearance.palette import PALETTE, background_image, pattern_mask
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, STYLES

ROOT = Path(__file__).resolve().parents[1]


def _scene(background: str = "plain", style: str = "photo", *, size: int = 128, quality: float = 1.0,
           seed: int = 0, pattern: str = "plain", artifacts: tuple[Artifact, ...] = ()) -> Scene:
    f = size / 128.0
    objs = (
        SceneObject("clock", "red", pattern, "medium", (10 * f, 10 * f, 32 * f, 32 * f)),
        SceneObject("dog", "blue", "striped", "large", (60 * f, 12 * f, 91 * f, 43 * f), glyph_noise=0.2),
        SceneObject("teddy bear", "yellow", "dotted", "small", (20 * f, 70 * f, 35 * f, 85 * f)),
        SceneObject("car", "green", "checkered", "medium", (70 * f, 70 * f, 92 * f, 92 * f)),
        SceneObject("cup", "white", "plain", "small", (100 * f, 100 * f, 115 * f, 115 * f)),
        SceneObject("apple", "black", "plain", "small", (100 * f, 50 * f, 115 * f, 65 * f)),
    )
    return Scene(size, size, background, style, objs, artifacts, quality, seed)


# ------------------------------------------------------------------------------------------------ glyphs
def test_glyph_plural_equals_singular() -> None:
    assert np.array_equal(glyph("clocks", 24), glyph("clock", 24))
    assert np.array_equal(glyph("mice", 20), glyph("mouse", 20))  # irregular plural
    assert np.array_equal(glyph("Teddy  Bears", 20), glyph("teddy bear", 20))


def test_glyph_is_one_blob_filling_its_box() -> None:
    for noun in ("clock", "dog", "zebra", "fire hydrant", "xylophone", "a made-up noun"):
        for size in (8, 15, 31, 64):
            m = glyph(noun, size)
            assert m.shape == (size, size) and m.dtype == bool
            _, n = ndimage.label(m, structure=np.ones((3, 3)))
            assert n == 1, (noun, size)
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            assert 0.3 < m.mean() < 0.95


def test_glyphs_of_distinct_nouns_differ() -> None:
    nouns = ["clock", "dog", "cat", "person", "car", "bicycle", "apple", "banana", "teddy bear", "cup"]
    t = np.stack([template(n) for n in nouns])
    iou = match_scores(t, t)
    np.fill_diagonal(iou, 0.0)
    assert iou.max() < 0.9
    # each noun's small rendered glyph matches its own template best among the ten
    for i, n in enumerate(nouns):
        assert int(np.argmax(match_scores(descriptor(glyph(n, 15)), t))) == i


def test_glyph_noise_is_deterministic_and_perturbs() -> None:
    a = glyph("dog", 32, noise=0.5, seed=3)
    assert np.array_equal(a, glyph("dog", 32, noise=0.5, seed=3))
    assert not np.array_equal(a, glyph("dog", 32, noise=0.5, seed=4))
    assert not np.array_equal(a, glyph("dog", 32))
    assert np.array_equal(glyph("dog", 32, noise=0.0, seed=9), glyph("dog", 32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noun": "", "size": 10}, "noun="),
        ({"noun": "dog", "size": 1}, "size="),
        ({"noun": "dog", "size": 10, "noise": 1.5}, "noise="),
        ({"noun": "dog", "size": 10, "seed": "x"}, "seed="),
    ],
)
def test_glyph_bad_args(kwargs: dict, match: str) -> None:
    noun = kwargs.pop("noun")
    size = kwargs.pop("size")
    with pytest.raises(ValueError, match=match):
        glyph(noun, size, **kwargs)


# ------------------------------------------------------------------------------------------------ render
def test_render_shape_dtype_and_sizes() -> None:
    for size in (64, 128, 512):
        img = render(_scene(size=size))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    img = render(Scene(200, 96))
    assert img.shape == (96, 200, 3)


def test_render_is_deterministic_in_process() -> None:
    s = _scene("grass", "watercolor", quality=0.7, seed=5, artifacts=(Artifact(50, 50, 6, 0.6, seed=2),))
    assert render(s).tobytes() == render(s).tobytes()
    other = _scene("grass", "watercolor", quality=0.7, seed=6, artifacts=(Artifact(50, 50, 6, 0.6, seed=2),))
    assert render(s).tobytes() != render(other).tobytes()


def test_render_is_deterministic_across_processes() -> None:
    code = (
        "import hashlib, sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_render import _scene; from experts.sim.render import render;"
        "from experts.sim.scene import Artifact;"
        "s = _scene('night', 'pixel art', quality=0.6, seed=11, artifacts=(Artifact(40, 40, 5, 0.5, seed=1),));"
        "print(hashlib.sha256(render(s).tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(ROOT))
    import hashlib

    s = _scene("night", "pixel art", quality=0.6, seed=11, artifacts=(Artifact(40, 40, 5, 0.5, seed=1),))
    assert out.stdout.strip() == hashlib.sha256(render(s).tobytes()).hexdigest()


def test_backgrounds_and_styles_visibly_differ() -> None:
    imgs = {(b, s): background_image(b, s).astype(np.int16) for b in BACKGROUNDS for s in STYLES}
    keys = list(imgs)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            d = float(np.abs(imgs[a] - imgs[b]).mean())
            assert d > 4.0, (a, b, d)
    # the full render reflects background and style too
    assert np.abs(render(_scene("sky")).astype(int) - render(_scene("sand")).astype(int)).mean() > 20
    assert np.abs(render(_scene(style="photo")).astype(int) - render(_scene(style="sketch")).astype(int)).mean() > 10


def test_patterns_visibly_differ() -> None:
    crops = {}
    for p in PATTERNS:
        img = render(_scene(pattern=p)).astype(np.int16)
        crops[p] = img[14:28, 14:28]
    for i, a in enumerate(PATTERNS):
        for b in PATTERNS[i + 1:]:
            changed = (np.abs(crops[a] - crops[b]).sum(axis=2) > 40).mean()
            assert changed > 0.05, (a, b, changed)
    # pattern masks are canvas aligned and distinct
    masks = [pattern_mask(p, 128, 128) for p in PATTERNS]
    assert not masks[0].any()
    assert len({m.tobytes() for m in masks}) == 4


def test_object_drawn_in_its_box_with_its_colour() -> None:
    s = Scene(128, 128, "plain", "photo", (SceneObject("vase", "blue", box=(40.0, 30.0, 70.0, 60.0)),))
    img = render(s).astype(np.int16)
    bg = background_image("plain", "photo").astype(np.int16)
    changed = np.abs(img - bg).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (40, 30, 70, 60)
    inner = img[changed].reshape(-1, 3)
    med = np.median(inner, axis=0)
    assert np.abs(med - np.array(PALETTE["blue"])).max() < 40


def test_quality_and_artifacts_degrade() -> None:
    clean = render(_scene()).astype(np.int16)
    noisy = render(_scene(quality=0.5)).astype(np.int16)
    assert np.abs(noisy - clean).mean() > 3
    art = render(_scene(artifacts=(Artifact(64, 64, 8, 1.0),))).astype(np.int16)
    diff = np.abs(art - clean).sum(axis=2) > 0
    ys, xs = np.nonzero(diff)
    assert 55 <= xs.min() and xs.max() <= 73 and 55 <= ys.min() and ys.max() <= 73


def test_palette_covers_colors() -> None:
    assert set(PALETTE) == set(COLORS)


def test_render_bad_args() -> None:
    with pytest.raises(ValueError, match="scene must be"):
        render("a red cup")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="background="):
        background_image("moon", "photo")
    with pytest.raises(ValueError, match="width="):
        background_image("plain", "photo", 32, 32)


def test_objects_partly_or_fully_off_canvas_are_clipped() -> None:
    objs = (SceneObject("dog", "red", box=(-10.0, -5.0, 20.0, 25.0)),
            SceneObject("cat", "blue", box=(120.0, 110.0, 150.0, 140.0)),
            SceneObject("cup", "green", box=(300.0, 300.0, 320.0, 320.0)))
    img = render(Scene(128, 128, "plain", "photo", objs))
    bg = background_image("plain", "photo")
    assert not np.array_equal(img[:20, :20], bg[:20, :20])
    assert not np.array_equal(img[110:, 120:], bg[110:, 120:])
