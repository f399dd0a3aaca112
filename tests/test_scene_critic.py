"""The pixel critic recovers hand-built SceneSim scenes and agrees with the judge; noise and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from critic.scene import SceneCritic
from experts.sim.judge import SceneJudge
from experts.sim.render import render
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.feedback import Feedback
from poser_env.core.geometry import SIZE_FRACTION
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, STYLES, Entity, Exclusion, Relation, Spec

CRITIC = SceneCritic()
JUDGE = SceneJudge()


def _obj(noun: str, color: str, x: float, y: float, *, pattern: str = "plain", size: str = "medium",
         canvas: int = 128, noise: float = 0.0) -> SceneObject:
    side = SIZE_FRACTION[size] * canvas
    return SceneObject(noun, color, pattern, size, (x, y, x + side, y + side), noise)


def _check(scene: Scene, spec: Spec) -> Feedback:
    fb = CRITIC(render(scene), spec)
    jb = JUDGE(scene, spec)
    assert [v.assertion_id for v in fb.verdicts] == [a.id for a in spec.assertions()]
    assert [v.holds for v in fb.verdicts] == [v.holds for v in jb.verdicts], (fb.text, jb.text)
    return fb


def test_counts_colours_patterns_positions() -> None:
    objs = (
        _obj("clock", "red", 8, 10, pattern="striped"),
        _obj("clock", "red", 8, 50, pattern="striped"),
        _obj("clock", "red", 8, 90, pattern="striped"),
        _obj("dog", "blue", 90, 40, pattern="dotted", size="large"),
        _obj("cat", "green", 50, 95, pattern="checkered", size="small"),
    )
    spec = Spec(
        entities=(
            Entity("clock", 3, "red", "striped"),
            Entity("dog", 1, "blue", "dotted", "large"),
            Entity("cat", 1, "green", "checkered", "small"),
        ),
        relations=(Relation(0, "left of", 1), Relation(1, "above", 2)),
        exclusions=(Exclusion("clock", 4), Exclusion("horse")),
        background="grass",
        style="photo",
    )
    fb = _check(Scene(128, 128, "grass", "photo", objs), spec)
    assert fb.all_hold, fb.text
    assert fb.background == "grass" and fb.style == "photo"
    assert sum(d.label == "clock" for d in fb.detections) == 3
    assert "all" in fb.text


def test_failures_are_reported_like_a_vlm() -> None:
    objs = (_obj("clock", "red", 10, 10), _obj("clock", "red", 60, 10), _obj("dog", "green", 40, 80))
    spec = Spec(entities=(Entity("clock", 3), Entity("dog", 1, "blue")), background="sky", style="sketch")
    fb = _check(Scene(128, 128, "sand", "watercolor", objs), spec)
    by = {v.assertion_id: v for v in fb.verdicts}
    assert by["e0.count"].holds == "no" and by["e1.color"].holds == "no"
    assert by["background"].holds == "no" and by["style"].holds == "no"
    assert "found 2 of 3 clocks" in fb.text
    assert "green, expected blue" in fb.text
    assert fb.background == "sand" and fb.style == "watercolor"


@pytest.mark.parametrize(("background", "style"), list(itertools.product(BACKGROUNDS, STYLES)))
def test_background_and_style_recognised(background: str, style: str) -> None:
    objs = (_obj("cup", "white", 20, 20), _obj("vase", "black", 70, 60, size="large"))
    spec = Spec(entities=(Entity("cup", 1, "white"), Entity("vase", 1, "black", size="large")),
                relations=(Relation(0, "left of", 1),), background=background, style=style)
    fb = _check(Scene(128, 128, background, style, objs, quality=0.85, seed=3), spec)
    assert fb.background == background and fb.style == style
    assert fb.all_hold, fb.text


@pytest.mark.parametrize("style", STYLES)
def test_every_colour_and_pattern_named(style: str) -> None:
    rng = np.random.default_rng(0)
    for k, color in enumerate(COLORS):
        pattern = PATTERNS[k % 4]
        bg = BACKGROUNDS[k % len(BACKGROUNDS)]
        objs = (_obj("kite", color, 30, 30, pattern=pattern, size="large"),
                _obj("boat", COLORS[(k + 3) % 11], 80, 80, pattern=PATTERNS[(k + 1) % 4]))
        spec = Spec(entities=(Entity("kite", 1, color, pattern, "large"), Entity("boat", 1)))
        fb = _check(Scene(128, 128, bg, style, objs, quality=float(rng.uniform(0.85, 1.0)), seed=k), spec)
        assert fb.all_hold, (style, color, pattern, fb.text)


def test_sizes_64_and_512() -> None:
    for size in (64, 256, 512):
        f = size / 128
        objs = (_obj("apple", "red", 10 * f, 10 * f, canvas=size, size="large"),
                _obj("banana", "yellow", 80 * f, 80 * f, canvas=size, size="small"))
        spec = Spec(entities=(Entity("apple", 1, "red", size="large"), Entity("banana", 1, "yellow", size="small")),
                    relations=(Relation(0, "above", 1),))
        fb = _check(Scene(size, size, "sky", "photo", objs), spec)
        assert fb.all_hold, (size, fb.text)


def test_unmentioned_nouns_and_artifacts_are_not_detected() -> None:
    objs = (_obj("giraffe", "orange", 20, 20, size="large"),)
    arts = (Artifact(90, 90, 6, 0.8, seed=1),)
    spec = Spec(entities=(Entity("toaster"),))
    fb = _check(Scene(128, 128, "plain", "photo", objs, arts, quality=0.9), spec)
    assert not fb.verdicts[0].ok
    assert all(d.score <= 0.3 for d in fb.detections)
    assert fb.fidelity < CRITIC(render(Scene(128, 128, "plain", "photo", objs)), spec).fidelity


def test_feedback_ranges_and_confidence() -> None:
    objs = (_obj("clock", "red", 10, 10), _obj("dog", "blue", 80, 80))
    spec = Spec(entities=(Entity("clock", 1, "red"), Entity("dog", 1, "green")))
    fb = CRITIC(render(Scene(128, 128, "plain", "photo", objs)), spec)
    for x in (fb.alignment, fb.fidelity, fb.aesthetics):
        assert 0.0 <= x <= 1.0
    by = {v.assertion_id: v for v in fb.verdicts}
    assert by["e0.color"].confidence > 0.8 and by["e1.color"].confidence < 0.2
    assert fb.aesthetics > 0.0 and fb.fidelity > 0.9


def test_noise_changes_verdicts_reproducibly() -> None:
    objs = tuple(_obj("clock", "red", 8 + 30 * (i % 4), 8 + 30 * (i // 4)) for i in range(8))
    spec = Spec(entities=(Entity("clock", 8, "red"), Entity("cup")), background="plain", style="photo")
    img = render(Scene(128, 128, "plain", "photo", objs))
    clean = [v.holds for v in SceneCritic()(img, spec).verdicts]
    runs = {}
    for seed in range(6):
        a = SceneCritic(noise=1.0, seed=seed)(img, spec)
        b = SceneCritic(noise=1.0, seed=seed)(img, spec)
        assert a == b
        runs[seed] = [v.holds for v in a.verdicts]
    assert any(r != clean for r in runs.values())
    assert len({tuple(r) for r in runs.values()}) > 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"noise": -0.1}, "noise="), ({"noise": 2}, "noise="), ({"noise": "x"}, "noise="), ({"seed": -1}, "seed="),
     ({"seed": 1.5}, "seed=")],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SceneCritic(**kwargs)


def test_bad_call_args() -> None:
    spec = Spec(entities=(Entity("cup"),))
    with pytest.raises(ValueError, match="image"):
        CRITIC(np.zeros((64, 64), dtype=np.uint8), spec)
    with pytest.raises(ValueError, match="spec"):
        CRITIC(np.zeros((64, 64, 3), dtype=np.uint8), "a cup")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"64\.\.512"):
        CRITIC(np.zeros((32, 32, 3), dtype=np.uint8), spec)


def test_numpy_erosion_matches_scipy() -> None:
    """The critic's numpy erosion equals repeated scipy 4-connected binary erosion with border value 0."""
    from scipy import ndimage

    from critic.scene import _erode

    cross = ndimage.generate_binary_structure(2, 1)
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 24, size=2))
        m = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        for steps in (1, 2, 3):
            ref = m
            for _ in range(steps):
                ref = ndimage.binary_erosion(ref, structure=cross, border_value=0)
            got = _erode(m, steps)
            assert got.dtype == bool and got.shape == m.shape
            assert np.array_equal(got, ref), (h, w, steps)
