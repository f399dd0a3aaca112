"""GenEval rules (poser_env.core.rules) and the ground-truth judge (experts.sim.judge) on hand-built scenes."""

from __future__ import annotations

import pytest

from experts.sim.judge import SceneJudge, geneval_overall, is_pass, scene_fidelity
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.feedback import Detection, Feedback, Verdict
from poser_env.core.geometry import geneval_relations, relation_holds, relation_mask, size_of_box
from poser_env.core.rules import assign_groups, evaluate
from poser_env.core.spec import Entity, Exclusion, Relation, Spec


def obj(noun: str, box: tuple[float, float, float, float], color: str = "red", pattern: str = "plain",
        size: str = "medium") -> SceneObject:
    return SceneObject(noun=noun, color=color, pattern=pattern, size=size, box=box)


def holds(fb: Feedback) -> dict[str, str]:
    return {v.assertion_id: v.holds for v in fb.verdicts}


judge = SceneJudge()


# ---------------------------------------------------------------- position geometry
def test_position_exact_half_is_not_a_relation() -> None:
    # B centre (2.5, 2.5), A centre (8.5, 10.5): offset (6, 8), norm 10; margins 0.1*(5+5) = 1 per axis
    # revised dx = 5 / 10 = 0.5 exactly -> not "right of"; dy = 7 / 10 = 0.7 -> "below"
    a, b = (6.0, 8.0, 11.0, 13.0), (0.0, 0.0, 5.0, 5.0)
    assert geneval_relations(a, b) == {"below"}
    assert not relation_holds(a, b, "right of")
    # a hair further right crosses the threshold
    a2 = (6.01, 8.0, 11.01, 13.0)
    assert relation_holds(a2, b, "right of")


def test_position_margin_shrinks_offset() -> None:
    b = (0.0, 0.0, 10.0, 10.0)
    # offset 4 with extents 10 + 10: revised (4 - 2) / 4 = 0.5 exactly -> nothing
    assert geneval_relations((4.0, 0.0, 14.0, 10.0), b) == frozenset()
    # offset 3: revised 1/3 -> nothing, although the centre is clearly to the right
    assert geneval_relations((3.0, 0.0, 13.0, 10.0), b) == frozenset()
    # offset 4.1: revised 2.1/4.1 > 0.5 -> right of
    assert geneval_relations((4.1, 0.0, 14.1, 10.0), b) == {"right of"}
    assert geneval_relations((-4.1, 0.0, 5.9, 10.0), b) == {"left of"}
    assert geneval_relations((0.0, -4.1, 10.0, 5.9), b) == {"above"}


def test_position_dead_zone() -> None:
    b = (0.0, 0.0, 10.0, 10.0)
    assert geneval_relations(b, b) == frozenset()  # same centre: no division by zero, no relation
    # offset (2.0005, 0) shrinks by 2 to 0.0005 < 1e-3 on x and 0 on y -> dead zone
    assert geneval_relations((2.0005, 0.0, 12.0005, 10.0), b) == frozenset()
    for rel in ("left of", "right of", "above", "below", "next to", "on top of", "under"):
        assert not relation_holds(b, b, rel)


def test_diagonal_gives_two_relations() -> None:
    assert geneval_relations((50.0, 50.0, 60.0, 60.0), (0.0, 0.0, 10.0, 10.0)) == {"right of", "below"}


def test_extended_relations_geometry() -> None:
    table = (0.0, 50.0, 40.0, 70.0)
    assert relation_holds((10.0, 30.0, 30.0, 48.0), table, "on top of")      # touching from above
    assert not relation_holds((10.0, 0.0, 30.0, 10.0), table, "on top of")   # far above: gap 40 > 0.25*(10+20)
    assert not relation_holds((50.0, 30.0, 70.0, 48.0), table, "on top of")  # above-right, centre not over it
    assert relation_holds((10.0, 72.0, 30.0, 90.0), table, "under")
    assert not relation_holds((10.0, 30.0, 30.0, 48.0), table, "under")
    cup = (0.0, 0.0, 10.0, 10.0)
    assert relation_holds((12.0, 0.0, 22.0, 10.0), cup, "next to")           # gap 2 <= mean width 10
    assert not relation_holds((40.0, 0.0, 50.0, 10.0), cup, "next to")       # gap 30 > 10
    assert not relation_holds((0.0, 12.0, 10.0, 22.0), cup, "next to")       # below is not next to


def test_relation_errors() -> None:
    with pytest.raises(ValueError, match="relation='behind'"):
        relation_holds((0, 0, 1, 1), (2, 2, 3, 3), "behind")
    with pytest.raises(ValueError, match="box_a"):
        relation_holds((5, 0, 1, 1), (2, 2, 3, 3), "left of")


# ---------------------------------------------------------------- judge on scenes
def test_position_prompt_pass_and_fail() -> None:
    spec = Spec((Entity("teddy bear"), Entity("dog")), (Relation(1, "right of", 0),), tag="position")
    good = Scene(objects=(obj("teddy bear", (10, 50, 30, 70)), obj("dog", (80, 50, 100, 70))))
    fb = judge(good, spec)
    assert is_pass(fb) and fb.alignment == 1.0
    assert all(v.confidence == 1.0 for v in fb.verdicts)
    bad = Scene(objects=(obj("teddy bear", (80, 50, 100, 70)), obj("dog", (10, 50, 30, 70))))
    fb = judge(bad, spec)
    assert holds(fb) == {"e0.exists": "yes", "e1.exists": "yes", "r0": "no"}
    assert fb.verdict("r0").confidence == 0.0 and "left of" in fb.verdict("r0").reason
    assert not is_pass(fb) and fb.alignment == pytest.approx(2 / 3)


def test_relation_needs_detected_reference() -> None:
    spec = Spec((Entity("teddy bear"), Entity("dog")), (Relation(1, "right of", 0),))
    fb = judge(Scene(objects=(obj("dog", (80, 50, 100, 70)),)), spec)
    assert holds(fb)["r0"] == "no" and "no teddy bear" in fb.verdict("r0").reason


def test_relation_checked_for_every_pair() -> None:
    spec = Spec((Entity("cup"), Entity("dog", count=2)), (Relation(1, "right of", 0),))
    scene = Scene(objects=(obj("cup", (40, 50, 60, 70)), obj("dog", (80, 50, 100, 70)), obj("dog", (5, 50, 25, 70))))
    assert holds(judge(scene, spec))["r0"] == "no"


def test_counting_exact_via_exclusion() -> None:
    spec = Spec((Entity("clock", count=2),), exclusions=(Exclusion("clock", 3),), tag="counting")
    boxes = [(5, 5, 25, 25), (40, 5, 60, 25), (80, 5, 100, 25)]
    two = judge(Scene(objects=tuple(obj("clock", b) for b in boxes[:2])), spec)
    three = judge(Scene(objects=tuple(obj("clock", b) for b in boxes)), spec)
    one = judge(Scene(objects=(obj("clock", boxes[0]),)), spec)
    assert holds(two) == {"e0.count": "yes", "x0": "yes"}
    assert holds(three) == {"e0.count": "yes", "x0": "no"}
    assert holds(one) == {"e0.count": "no", "x0": "yes"}


def test_color_each_counted_member() -> None:
    spec = Spec((Entity("cup", count=2, color="blue"),))
    s = Scene(objects=(obj("cup", (5, 5, 25, 25), "blue"), obj("cup", (40, 5, 60, 25), "green")))
    fb = judge(s, spec)
    assert holds(fb) == {"e0.count": "yes", "e0.color": "no"}
    assert "green" in fb.verdict("e0.color").reason
    # colour of a missing group fails
    assert holds(judge(Scene(), spec))["e0.color"] == "no"


def test_pattern_and_size() -> None:
    spec = Spec((Entity("cup", pattern="striped", size="large"),))
    s = Scene(objects=(obj("cup", (5, 5, 35, 35), pattern="striped", size="large"),))
    assert is_pass(judge(s, spec))
    s2 = Scene(objects=(obj("cup", (5, 5, 20, 20), pattern="dotted", size="small"),))
    assert holds(judge(s2, spec)) == {"e0.exists": "yes", "e0.pattern": "no", "e0.size": "no"}


def test_size_from_box_when_detection_has_none() -> None:
    assert size_of_box((0, 0, 15, 15), 128, 128) == "small"     # 0.117
    assert size_of_box((0, 0, 22, 22), 128, 128) == "medium"    # 0.172
    assert size_of_box((0, 0, 31, 31), 128, 128) == "large"     # 0.242
    spec = Spec((Entity("cup", size="large"),))
    v = evaluate(spec, [Detection("cup", (0, 0, 31, 31))], width=128, height=128)
    assert [x.holds for x in v] == ["yes", "yes"]


def test_shared_noun_groups_are_assigned_by_attributes() -> None:
    spec = Spec((Entity("cup", color="red"), Entity("cup", color="blue")), (Relation(0, "left of", 1),))
    s = Scene(objects=(obj("cup", (80, 50, 100, 70), "blue"), obj("cup", (10, 50, 30, 70), "red")))
    assert is_pass(judge(s, spec))
    swapped = Scene(objects=(obj("cup", (80, 50, 100, 70), "red"), obj("cup", (10, 50, 30, 70), "blue")))
    assert holds(judge(swapped, spec)) == {"e0.exists": "yes", "e0.color": "yes", "e1.exists": "yes",
                                           "e1.color": "yes", "r0": "no"}
    # an attribute-free group takes what the specific group leaves
    spec2 = Spec((Entity("cup"), Entity("cup", color="red")))
    groups = assign_groups(spec2, [Detection("cup", (0, 0, 9, 9), color="red", score=0.5),
                                   Detection("cup", (20, 0, 29, 9), color="blue", score=0.9)],
                           threshold=0.3, width=128, height=128)
    assert groups[0][0].color == "blue" and groups[1][0].color == "red"


def test_background_style_and_unknown() -> None:
    spec = Spec((Entity("cup"),), background="grass", style="sketch")
    s = Scene(background="grass", style="photo", objects=(obj("cup", (5, 5, 25, 25)),))
    assert holds(judge(s, spec)) == {"e0.exists": "yes", "background": "yes", "style": "no"}
    v = evaluate(spec, [Detection("cup", (5, 5, 25, 25))], width=128, height=128)
    assert [x.holds for x in v] == ["yes", "unknown", "unknown"]
    assert v[1].confidence == 0.5


def test_thresholds_and_scores() -> None:
    spec = Spec((Entity("clock", count=2),), tag="counting")
    dets = [Detection("clock", (0, 0, 9, 9), score=0.95), Detection("clock", (20, 0, 29, 9), score=0.5)]
    assert evaluate(spec, dets, width=64, height=64)[0].holds == "no"          # 0.9 for counting
    loose = Spec((Entity("clock", count=2),))
    v = evaluate(loose, dets, width=64, height=64)[0]
    assert v.holds == "yes" and v.confidence == 0.5                              # lowest supporting score
    assert evaluate(loose, [Detection("clock", (0, 0, 9, 9), score=0.3)] * 2, width=64, height=64)[0].holds == "no"
    many = [Detection("cup", (i, 0, i + 1, 1)) for i in range(20)]
    assert evaluate(Spec((), exclusions=(Exclusion("cup", 11),)), many, width=64, height=64)[0].holds == "no"
    assert evaluate(Spec((), exclusions=(Exclusion("cup", 11),)), many[:10], width=64, height=64)[0].holds == "yes"


def test_max_16_per_class() -> None:
    many = [Detection("cup", (i, 0, i + 1, 1)) for i in range(20)]
    spec = Spec((Entity("cup", count=10),), exclusions=(Exclusion("cup", 11),))
    v = evaluate(spec, many, width=64, height=64)
    assert [x.holds for x in v] == ["yes", "no"]
    assert v[1].reason.startswith("found 16 cup")  # 20 detected, 16 kept


def test_colour_no_confidence_from_scores() -> None:
    spec = Spec((Entity("cup", color="red"),))
    v = evaluate(spec, [Detection("cup", (0, 0, 9, 9), score=0.8, color="blue")], width=64, height=64)
    assert v[1].holds == "no" and v[1].confidence == pytest.approx(0.2)


def test_evaluate_errors() -> None:
    spec = Spec((Entity("cup"),))
    with pytest.raises(ValueError, match="width=0"):
        evaluate(spec, [], width=0, height=64)
    with pytest.raises(ValueError, match=r"threshold=1\.5"):
        evaluate(spec, [], width=64, height=64, threshold=1.5)


def test_judge_errors_and_fidelity() -> None:
    with pytest.raises(ValueError, match="scene must be"):
        judge("not a scene", Spec((Entity("cup"),)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spec must be"):
        judge(Scene(), "a cup")  # type: ignore[arg-type]
    clean = Scene(quality=0.9)
    dirty = Scene(quality=0.9, artifacts=(Artifact(10, 10, 8, 1.0), Artifact(50, 50, 2, 0.2)))
    assert scene_fidelity(clean) == pytest.approx(0.9)
    assert 0.6 < scene_fidelity(dirty) < 0.9 * (1 - 0.12) + 1e-9
    assert judge(dirty, Spec((Entity("cup"),))).fidelity == scene_fidelity(dirty)


def test_is_pass_and_geneval_overall() -> None:
    fb = Feedback((Verdict("a", "yes", 1.0), Verdict("b", "no", 0.0)), alignment=0.5)
    assert not is_pass(fb)
    assert is_pass(Feedback((Verdict("a", "yes", 1.0),), alignment=1.0))
    # unweighted mean of tag accuracies, not of images
    assert geneval_overall({"a": [True, True, True, False], "b": [False]}) == pytest.approx((0.75 + 0) / 2)
    with pytest.raises(ValueError, match="empty"):
        geneval_overall({})
    with pytest.raises(ValueError, match="results\\['a'\\]"):
        geneval_overall({"a": []})
    with pytest.raises(ValueError, match="feedback must be"):
        is_pass("yes")  # type: ignore[arg-type]


def test_relation_mask_agrees_with_geneval_relations() -> None:
    import numpy as np

    from poser_env.core.spec import RELATIONS

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(400, 2, 2))
    wh = rng.uniform(1, 30, size=(400, 2, 2))
    a = np.concatenate([xy[:, 0], xy[:, 0] + wh[:, 0]], axis=1)
    b = np.concatenate([xy[:, 1], xy[:, 1] + wh[:, 1]], axis=1)
    for rel in RELATIONS:
        mask = relation_mask(a, b, rel)
        assert mask.any() and not mask.all()
        for i in range(0, 400, 7):
            assert mask[i] == relation_holds(tuple(a[i]), tuple(b[i]), rel)
            if rel in ("left of", "right of", "above", "below"):
                assert mask[i] == (rel in geneval_relations(tuple(a[i]), tuple(b[i])))


def test_relation_holds_scalar_path_matches_relation_mask() -> None:
    """relation_holds (plain-float fast path) agrees with the vectorised relation_mask, ties included."""
    import numpy as np

    from poser_env.core.spec import RELATIONS

    rng = np.random.default_rng(0)
    n = 3000
    xy = rng.integers(0, 60, size=(n, 2, 2)).astype(np.float64)  # integer pixels: many exact ties
    wh = rng.integers(1, 30, size=(n, 2, 2)).astype(np.float64)
    xy[::7] += rng.random((len(xy[::7]), 2, 2))  # and some fractional boxes
    a = np.concatenate([xy[:, 0], xy[:, 0] + wh[:, 0]], axis=1)
    b = np.concatenate([xy[:, 1], xy[:, 1] + wh[:, 1]], axis=1)
    b[::11] = a[::11]  # identical boxes: zero offset
    for rel in RELATIONS:
        want = relation_mask(a, b, rel)
        got = np.array([relation_holds(tuple(p), tuple(q), rel) for p, q in zip(a, b)])
        assert np.array_equal(got, want), rel


def test_nearest_gaps_matches_nearest_gap() -> None:
    """nearest_gaps gives, element for element, nearest_gap of each box to all the others."""
    import numpy as np

    from poser_env.core.geometry import nearest_gap, nearest_gaps

    rng = np.random.default_rng(1)
    assert nearest_gaps([]).shape == (0,)
    assert nearest_gaps([(0.0, 0.0, 2.0, 2.0)]).tolist() == [float("inf")]
    for n in range(2, 12):
        xy = rng.uniform(0, 100, size=(n, 2))
        boxes = [tuple(v) for v in np.concatenate([xy, xy + rng.uniform(1, 30, size=(n, 2))], axis=1)]
        want = [nearest_gap(b, [x for i, x in enumerate(boxes) if i != j]) for j, b in enumerate(boxes)]
        assert nearest_gaps(boxes).tolist() == want
    with pytest.raises(ValueError, match="box="):
        nearest_gaps([(0.0, 0.0, 2.0, 2.0), (3.0, 3.0, 1.0, 5.0)])
