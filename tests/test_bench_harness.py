"""The benchmark harness reproduces hand-computed GenEval scores on a fixture of prompts and detections.

Sixteen GenEval-format records (two to five images per tag, two prompts with two images each) with hand-made
detections, some passing and some failing exactly at GenEval's boundaries:

* score exactly 0.3 (GenEval keeps > 0.3) and exactly 0.9 for counting (keeps > 0.9);
* counting with one extra detection fires the ``exclude`` (count + 1) rule;
* a colour mismatch;
* position offset normalised to exactly -0.5 ("left of" needs dx < -0.5);
* the ``0.1 * (extent_A + extent_B)`` margin eating a 15 px offset between 100 px boxes;
* the 1e-3 dead zone (shrunk offset 0.0008 px: no relation, although the normalised dx would be -0.89).

Per-image pass comes from :func:`poser_env.core.rules.evaluate`; the scores from :func:`experts.sim.judge.geneval_overall`,
from :func:`agents.evaluate.summarize` over :class:`agents.evaluate.EpisodeResult` rows (what ``poser bench``
aggregates) and from :func:`agents.bench.bench_json`. Every expected number is written by hand below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from agents.bench import bench_json, bench_markdown, load_bench_prompts
from agents.evaluate import EpisodeResult, summarize
from experts.sim.judge import geneval_overall
from poser_env.core.feedback import Detection
from poser_env.core.geometry import geneval_relations
from poser_env.core.rules import evaluate
from poser_env.core.spec import GENEVAL_TAGS, Spec

W = H = 512


def D(label: str, box: tuple[float, float, float, float], score: float = 0.95, color: str | None = None) -> Detection:
    return Detection(label=label, box=box, score=score, color=color)


def _pos(dog: str = "dog", cat: str = "cat", rel: str = "left of") -> dict[str, Any]:
    """GenEval's position record: the reference group comes first, the subject carries ``position``."""
    return {"tag": "position", "include": [{"class": cat, "count": 1},
                                           {"class": dog, "count": 1, "position": [rel, 0]}],
            "prompt": f"a photo of a {dog} {rel} a {cat}"}


# Reference cat box 10x10 centred at (100, 100). Dog boxes 10x10, so the margin is 0.1 * (10 + 10) = 2 px per axis.
CAT = (95.0, 95.0, 105.0, 105.0)
DOG_AT_BOUNDARY = (83.0, 111.0, 93.0, 121.0)  # offset (-12, 16), |offset| 20; shrunk dx = -10 -> -10/20 = -0.5
DOG_PAST_BOUNDARY = (82.0, 111.0, 92.0, 121.0)  # offset (-13, 16), |offset| 20.616; dx = -11/20.616 = -0.534
# Two 100 px boxes 15 px apart: margin 0.1 * 200 = 20 > 15 -> shrunk offset (0, 0) -> no relation at all.
BIRD_WIDE = (0.0, 0.0, 100.0, 100.0)
KITE_WIDE = (15.0, 0.0, 115.0, 100.0)
# Sub-pixel boxes (0.0005 px sides, margin 0.0001): centres 0.0009 px apart -> shrunk 0.0008 < 1e-3 -> dead zone;
# 0.0013 px apart -> shrunk 0.0012 >= 1e-3 -> dx = -0.0012 / 0.0013 = -0.92 -> "left of".
TINY_CAT = (10.0009, 10.0, 10.0014, 10.0005)
TINY_DOG = (10.0, 10.0, 10.0005, 10.0005)
TINY_CAT_FAR = (10.0013, 10.0, 10.0018, 10.0005)

# (GenEval record, detections of its one image, expected verdicts in spec.assertions() order)
FIXTURE: list[tuple[dict[str, Any], list[Detection], list[str]]] = [
    # single_object: 1 of 2
    ({"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
     [D("bench", (10, 10, 200, 100), 0.95)], ["yes"]),
    ({"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"},
     [D("cow", (10, 10, 200, 100), 0.3)], ["no"]),  # score exactly 0.3: GenEval needs > 0.3
    # two_object: 1 of 2
    ({"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cake", "count": 1}],
      "prompt": "a photo of a dog and a cake"},
     [D("dog", (10, 10, 100, 100), 0.8), D("cake", (200, 200, 300, 300), 0.7)], ["yes", "yes"]),
    ({"tag": "two_object", "include": [{"class": "fork", "count": 1}, {"class": "vase", "count": 1}],
      "prompt": "a photo of a fork and a vase"},
     [D("fork", (10, 10, 100, 100), 0.8), D("cup", (200, 200, 300, 300), 0.9)], ["yes", "no"]),
    # counting: 1 of 3 (threshold 0.9)
    ({"tag": "counting", "include": [{"class": "clock", "count": 3}], "exclude": [{"class": "clock", "count": 4}],
      "prompt": "a photo of three clocks"},
     [D("clock", (i * 100.0, 10, i * 100.0 + 80, 90), 0.95) for i in range(3)], ["yes", "yes"]),
    ({"tag": "counting", "include": [{"class": "clock", "count": 3}], "exclude": [{"class": "clock", "count": 4}],
      "prompt": "a photo of three clocks"},  # a fourth clock fires the exclusion
     [D("clock", (i * 100.0, 10, i * 100.0 + 80, 90), 0.95) for i in range(4)], ["yes", "no"]),
    ({"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}],
      "prompt": "a photo of two cups"},  # 0.9 is not > 0.9 and 0.5 is far below: one cup counts
     [D("cup", (10, 10, 90, 90), 0.95), D("cup", (110, 10, 190, 90), 0.9), D("cup", (210, 10, 290, 90), 0.5)],
     ["no", "yes"]),
    # colors: 1 of 2
    ({"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
     [D("car", (10, 10, 200, 100), 0.9, "red")], ["yes", "yes"]),
    ({"tag": "colors", "include": [{"class": "vase", "count": 1, "color": "green"}],
      "prompt": "a photo of a green vase"},
     [D("vase", (10, 10, 200, 100), 0.9, "blue")], ["yes", "no"]),
    # position: 2 of 5 (verdicts: cat exists, dog exists, relation)
    (_pos(), [D("cat", CAT), D("dog", DOG_AT_BOUNDARY)], ["yes", "yes", "no"]),
    (_pos(), [D("cat", CAT), D("dog", DOG_PAST_BOUNDARY)], ["yes", "yes", "yes"]),
    (_pos("bird", "kite"), [D("kite", KITE_WIDE), D("bird", BIRD_WIDE)], ["yes", "yes", "no"]),
    (_pos("bird", "cup"), [D("cup", TINY_CAT), D("bird", TINY_DOG)], ["yes", "yes", "no"]),
    (_pos("bird", "vase"), [D("vase", TINY_CAT_FAR), D("bird", TINY_DOG)], ["yes", "yes", "yes"]),
    # color_attr: 1 of 2
    ({"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"},
                                       {"class": "bench", "count": 1, "color": "blue"}],
      "prompt": "a photo of a red car and a blue bench"},
     [D("car", (10, 10, 200, 100), 0.9, "red"), D("bench", (250, 10, 400, 100), 0.9, "blue")],
     ["yes", "yes", "yes", "yes"]),
    ({"tag": "color_attr", "include": [{"class": "bowl", "count": 1, "color": "purple"},
                                       {"class": "umbrella", "count": 1, "color": "yellow"}],
      "prompt": "a photo of a purple bowl and a yellow umbrella"},
     [D("bowl", (10, 10, 200, 100), 0.9, "purple"), D("umbrella", (250, 10, 400, 100), 0.9, "orange")],
     ["yes", "yes", "yes", "no"]),
]

# Hand-computed results.
EXPECTED_PASS = [True, False, True, False, True, False, False, True, False, False, True, False, False, True,
                 True, False]
EXPECTED_PER_TAG = {"single_object": 1 / 2, "two_object": 1 / 2, "counting": 1 / 3, "colors": 1 / 2,
                    "position": 2 / 5, "color_attr": 1 / 2}
EXPECTED_OVERALL = (1 / 2 + 1 / 2 + 1 / 3 + 1 / 2 + 2 / 5 + 1 / 2) / 6  # = 0.4555...
# Mean over images of the fraction of assertions that hold.
EXPECTED_ASSERTION_ACC = (1 + 0 + 1 + 1 / 2 + 1 + 1 / 2 + 1 / 2 + 1 + 1 / 2 + 2 / 3 + 1 + 2 / 3 + 2 / 3 + 1 + 1
                          + 3 / 4) / 16  # = 11.75 / 16
EXPECTED_ALL_ASSERTIONS = 7 / 16
EXPECTED_N_PROMPTS = 14  # "three clocks" and "a dog left of a cat" have two images each


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[Spec]:
    """The fixture's records written as a GenEval JSONL file and read back through the bench loader."""
    path = Path(tmp_path_factory.mktemp("bench")) / "fixture.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec, _, _ in FIXTURE))
    got = load_bench_prompts(path, "geneval")
    assert [s.to_geneval() for s in got] == [Spec.from_geneval(rec).to_geneval() for rec, _, _ in FIXTURE]
    return got


@pytest.fixture(scope="module")
def passes(specs: list[Spec]) -> list[tuple[bool, float]]:
    out = []
    for spec, (_, dets, holds) in zip(specs, FIXTURE):
        verdicts = evaluate(spec, dets, width=W, height=H)
        assert [v.holds for v in verdicts] == holds, spec.prompt
        out.append((all(v.ok for v in verdicts), sum(v.ok for v in verdicts) / len(verdicts)))
    return out


def test_boundary_geometry_is_what_the_fixture_claims() -> None:
    assert geneval_relations(DOG_AT_BOUNDARY, CAT) == {"below"}  # dx is exactly -0.5: not "left of"
    assert geneval_relations(DOG_PAST_BOUNDARY, CAT) == {"left of", "below"}
    assert geneval_relations(BIRD_WIDE, KITE_WIDE) == frozenset()  # margin 20 > offset 15
    assert geneval_relations((0.0, 0.0, 10.0, 100.0), (15.0, 0.0, 25.0, 100.0)) == {"left of"}  # margin 2 < 15
    assert geneval_relations(TINY_DOG, TINY_CAT) == frozenset()  # shrunk offset 0.0008 < 1e-3: dead zone
    assert geneval_relations(TINY_DOG, TINY_CAT_FAR) == {"left of"}


def test_per_image_pass(passes: list[tuple[bool, float]], specs: list[Spec]) -> None:
    assert [p for p, _ in passes] == EXPECTED_PASS
    assert [s.tag for s in specs].count("position") == 5
    assert {s.tag for s in specs} == set(GENEVAL_TAGS)


def test_geneval_overall(passes: list[tuple[bool, float]], specs: list[Spec]) -> None:
    by_tag: dict[str, list[bool]] = {}
    for spec, (p, _) in zip(specs, passes):
        assert spec.tag is not None
        by_tag.setdefault(spec.tag, []).append(p)
    assert {t: sum(v) / len(v) for t, v in by_tag.items()} == pytest.approx(EXPECTED_PER_TAG)
    assert geneval_overall(by_tag) == pytest.approx(EXPECTED_OVERALL)
    assert EXPECTED_OVERALL == pytest.approx(0.45555555555)


def _rows(specs: list[Spec], passes: list[tuple[bool, float]], run: int = 0, all_pass: bool = False
          ) -> list[EpisodeResult]:
    return [
        EpisodeResult(method="fixture", run=run, prompt=s.prompt, tag=str(s.tag), judge_pass=all_pass or p,
                      judge_alignment=1.0 if all_pass else a, critic_pass=not p, critic_alignment=1.0 - a,
                      calls=1 + i % 3, cost=0.5 * (1 + i % 3), steps=2, wall_time=0.01)
        for i, (s, (p, a)) in enumerate(zip(specs, passes))
    ]


def test_summarize_and_bench_json(passes: list[tuple[bool, float]], specs: list[Spec]) -> None:
    rows = _rows(specs, passes)
    summary = summarize(rows)["fixture"]
    assert summary.per_tag == pytest.approx(EXPECTED_PER_TAG)
    assert summary.overall == pytest.approx(EXPECTED_OVERALL)
    assert summary.geneval_overall == pytest.approx(EXPECTED_OVERALL)
    assert summary.overall_ci == 0.0  # one run: no interval
    assert summary.assertion_accuracy == pytest.approx(EXPECTED_ASSERTION_ACC)
    assert summary.assertion_accuracy == pytest.approx(11.75 / 16)
    # the critic column is scored on its own (here: the opposite of the judge in every image)
    assert summary.critic_per_tag == pytest.approx({t: 1 - v for t, v in EXPECTED_PER_TAG.items()})
    # calls cycle 1, 2, 3 over 16 images: 6 ones, 5 twos, 5 threes
    assert summary.mean_calls == pytest.approx((6 * 1 + 5 * 2 + 5 * 3) / 16)
    assert summary.mean_cost == pytest.approx(0.5 * (6 * 1 + 5 * 2 + 5 * 3) / 16)
    assert summary.n_prompts == EXPECTED_N_PROMPTS and summary.n_episodes == 16 and summary.n_runs == 1

    js = bench_json(summary, rows)
    assert {"overall", "per_tag", "mean_calls", "mean_cost", "n_prompts", "method"} <= set(js)
    assert js["method"] == "fixture"
    assert js["overall"] == pytest.approx(EXPECTED_OVERALL)
    assert js["per_tag"] == pytest.approx(EXPECTED_PER_TAG)
    assert js["all_assertions_rate"] == pytest.approx(EXPECTED_ALL_ASSERTIONS)
    assert js["n_prompts"] == 14 and js["mean_calls"] == pytest.approx(31 / 16)
    json.dumps(js)  # serialisable as written by `poser bench`
    assert "0.456 ± 0.000" in bench_markdown({"fixture": summary}, rows)


def test_two_runs_mean_and_ci(passes: list[tuple[bool, float]], specs: list[Spec]) -> None:
    """Run 0 is the fixture, run 1 passes every image: overall is the mean over runs, CI Student-t over runs."""
    rows = _rows(specs, passes, run=0) + _rows(specs, passes, run=1, all_pass=True)
    s = summarize(rows)["fixture"]
    assert s.overall == pytest.approx((EXPECTED_OVERALL + 1.0) / 2)
    assert s.per_tag["counting"] == pytest.approx((1 / 3 + 1) / 2)
    # two values a, b: t_{0.975, 1} * (|a - b| / sqrt 2) / sqrt 2 = 12.7062 * |a - b| / 2
    assert s.overall_ci == pytest.approx(12.706204736174698 * (1.0 - EXPECTED_OVERALL) / 2)
    assert s.n_runs == 2 and s.n_prompts == 14 and s.n_episodes == 32
    assert not math.isnan(s.assertion_accuracy)


def test_paired_table_compares_learned_run_by_run(passes: list[tuple[bool, float]], specs: list[Spec]) -> None:
    """learned = the fixture in run 0 and every image passing in run 1; the baseline = the fixture in both runs.
    The paired differences are 0 (run 0) and 1 - overall (run 1)."""
    import dataclasses

    from agents.bench import paired_table
    from agents.evaluate import paired_difference

    base = [dataclasses.replace(r, method="fixed:x") for r in _rows(specs, passes, 0) + _rows(specs, passes, 1)]
    mine = [dataclasses.replace(r, method="learned")
            for r in _rows(specs, passes, 0) + _rows(specs, passes, 1, all_pass=True)]
    rows = base + mine
    mean, half, n = paired_difference(rows, "learned", "fixed:x", "overall")
    assert n == 2 and mean == pytest.approx((1 - EXPECTED_OVERALL) / 2)
    assert half == pytest.approx(12.706 * (1 - EXPECTED_OVERALL) / 2, rel=1e-3)  # t(0.975, 1) * s / sqrt(2)
    md = bench_markdown(summarize(rows), rows)
    assert "Paired differences, learned minus each method" in md and f"| fixed:x | {mean:+.3f} ± {half:.3f}" in md
    assert paired_table(summarize(base), base) is None  # no learned method
    one = [r for r in rows if r.run == 0]
    assert paired_table(summarize(one), one) is None  # one run: no interval
