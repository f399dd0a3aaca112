"""The report: rliable statistics, method colours, report.md + self-contained report.html, readable captions."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agents.evaluate import summarize
from agents.report import OKABE_ITO, PALETTE, ROLE_COLORS, TOL_MUTED, method_colors, write_report
from agents.stats import (
    interquartile_mean,
    probability_of_improvement,
    rliable_markdown,
    rliable_summary,
    score_matrices,
)
from poser_env.rendering import _wrap, contact_sheet, episode_frames
from tests.report_fixture import METHODS, TAGS, synthetic_curve, synthetic_results

pytest.importorskip("rliable", reason="rliable is missing: pip install 'image-poser[rl]'")


# ---------------------------------------------------------------- rliable
def test_score_matrices_are_runs_by_tags() -> None:
    res = synthetic_results(runs=3, prompts_per_tag=4)
    mats, tasks = score_matrices(res)
    assert tasks == sorted(TAGS) and set(mats) == set(METHODS)
    for m, mat in mats.items():
        assert mat.shape == (3, len(TAGS))
        rows = [r for r in res if r.method == m and r.run == 1 and r.tag == "counting"]
        assert mat[1, tasks.index("counting")] == pytest.approx(np.mean([r.judge_pass for r in rows]))
    # a method missing a tag restricts the tasks to the common ones
    partial = [r for r in res if not (r.method == "random" and r.tag == "long")]
    assert "long" not in score_matrices(partial)[1]


def test_rliable_estimates_are_rliable_s_and_seeded() -> None:
    from rliable import metrics
    from scipy import stats

    res = synthetic_results(runs=3, prompts_per_tag=4)
    s = rliable_summary(res, reps=300)
    assert s is not None and s.reference == "learned"
    mats, _ = score_matrices(res)
    for m, mat in mats.items():
        assert s.iqm[m][0] == pytest.approx(stats.trim_mean(mat.reshape(-1), 0.25))  # IQM = 25% trimmed mean
        assert s.mean[m][0] == pytest.approx(mat.mean())
        for est in (s.iqm[m], s.mean[m]):
            assert 0.0 <= est[1] <= est[0] <= est[2] <= 1.0
        assert len(s.profiles[m][0]) == len(s.taus) == 21
    assert set(s.improvement) == set(METHODS) - {"learned"}
    for m, (p, lo, hi) in s.improvement.items():
        assert p == pytest.approx(metrics.probability_of_improvement(mats["learned"], mats[m]))
        assert 0.0 <= lo <= p <= hi <= 1.0
    assert s.improvement["random"][1] > 0.5  # learned (0.75 pass) beats random (0.3) clearly
    assert s == rliable_summary(res, reps=300)  # same results, same seed: the same intervals
    assert s != rliable_summary(res, reps=300, seed=1)
    md = rliable_markdown(s)
    assert "| learned | 3 |" in md and "P(learned > method)" in md
    with pytest.raises(ValueError, match=r"reps=10 must be an int >= 100"):
        rliable_summary(res, reps=10)


@pytest.mark.parametrize("seed", range(5))
def test_fast_estimators_match_rliable(seed: int) -> None:
    from rliable import library, metrics

    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, (3, 7)) / 4, rng.integers(0, 5, (2 + seed % 2, 7)) / 4  # ties included
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert interquartile_mean(x) == pytest.approx(metrics.aggregate_iqm(x))
    assert interquartile_mean(y) == pytest.approx(metrics.aggregate_iqm(y))
    s = rliable_summary(synthetic_results(runs=2, prompts_per_tag=2, seed=seed), reps=100)
    mats, _ = score_matrices(synthetic_results(runs=2, prompts_per_tag=2, seed=seed))
    for m, mat in mats.items():
        assert s.profiles[m][0] == pytest.approx([library.run_score_deviation(mat, t) for t in s.taus])


# ---------------------------------------------------------------- colours
def test_method_colors_fixed_distinct_colour_blind_safe() -> None:
    methods = ["random", "single:sim/sketch", "single:sim/layout", "single:sim/photoreal", "single:sim/dense",
               "fixed:sim/sketch", "fixed:sim/layout", "fixed:sim/photoreal", "fixed:sim/dense", "critic-greedy",
               "oracle", "learned"]
    c = method_colors(methods)
    assert len(set(c.values())) == len(methods)  # one colour per method
    assert {c[m] for m in ROLE_COLORS} == set(ROLE_COLORS.values()) and c["learned"] == "#D55E00"
    assert set(c.values()) <= set(OKABE_ITO) | set(TOL_MUTED) | set(ROLE_COLORS.values())
    assert len(set(PALETTE)) == len(PALETTE) == 14 and not set(PALETTE) & set(ROLE_COLORS.values())
    assert method_colors(list(reversed(methods))) == c  # the order methods come in does not matter


# ---------------------------------------------------------------- report files
def _tiny_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def test_write_report_md_and_self_contained_html(tmp_path: Path) -> None:
    res = synthetic_results(runs=2, prompts_per_tag=3)
    ex = tmp_path / "examples" / "example-0"
    ex.mkdir(parents=True)
    sheet = _tiny_png(ex / "contact_sheet.png", (200, 10, 10))
    Image.new("RGB", (40, 30), (0, 0, 200)).save(ex / "episode.gif", save_all=True,
                                                  append_images=[Image.new("RGB", (40, 30))], duration=500)
    (ex / "trace.json").write_text(json.dumps({"prompt": "a red <cat> & \"dog\"", "policy": "learned", "seed": 0,
                                               "is_success": True, "steps": [{}, {}]}))
    md_path = write_report(tmp_path, res, summarize(res), curves={"seed0": synthetic_curve(0)}, learned="learned",
                           contact_sheets=[sheet], config={"k": 1}, rliable_reps=200)
    md = md_path.read_text()
    html = (tmp_path / "report.html").read_text()
    for f in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):  # every image the markdown links exists
        assert (tmp_path / f).is_file(), f
    for name in ("learning_curves.png", "per_tag.png", "expert_usage.png", "rliable_intervals.png",
                 "rliable_improvement.png", "rliable_profiles.png"):
        assert f"]({name})" in md
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 8 and all(s.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for s in srcs)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # the inlined bytes are the files' bytes
    assert base64.b64encode(sheet.read_bytes()).decode() in html
    assert "a red &lt;cat&gt; &amp; &quot;dog&quot;" in html  # captions are escaped
    assert html.count("<table>") >= 4  # claims, results, rliable IQM, probability of improvement
    rl = json.loads((tmp_path / "rliable.json").read_text())
    assert rl["reference"] == "learned" and set(rl["iqm"]) == set(METHODS)
    # without html=True only the markdown is written
    (tmp_path / "report.html").unlink()
    write_report(tmp_path, res, summarize(res), html=False, rliable_reps=200)
    assert not (tmp_path / "report.html").exists()


# ---------------------------------------------------------------- captions
def test_wrap_never_cuts_text() -> None:
    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    from poser_env.rendering import _caption_font

    font = _caption_font()
    text = "command: generate: three striped pink hair driers left of a supercalifragilisticexpialidocious dog"
    lines = _wrap(d, text, 120, font)
    assert all(d.textlength(line, font=font) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def _trace(n_assertions: int) -> tuple[list[dict[str, object]], list[str]]:
    texts = [f"assertion number {i} about a fairly long object name" for i in range(n_assertions)]
    verdicts = {f"a{i}": ("yes" if i % 2 == 0 else "no") for i in range(n_assertions)}
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    rec = {"step": 1, "expert": "sim/layout", "command": "generate: " + " ".join(texts[:3]), "alignment": 0.5,
           "image": img, "verdicts": verdicts}
    return [rec, {**rec, "step": 2, "expert": "sim/recolor"}], texts


def test_contact_sheet_grows_to_fit_every_assertion() -> None:
    short, t_short = _trace(2)
    long, t_long = _trace(20)
    a = contact_sheet(short, prompt="p", assertions=t_short)
    b = contact_sheet(long, prompt="p " * 200, assertions=t_long)
    assert b.height - a.height >= 18 * 14  # 18 more assertion lines (and a longer prompt), none dropped
    # ticks (green) and crosses (red) are drawn
    px = np.asarray(b)
    assert ((px[..., 1] > 120) & (px[..., 0] < 60) & (px[..., 2] < 90)).any()
    assert ((px[..., 0] > 180) & (px[..., 1] < 60) & (px[..., 2] < 60)).any()
    frames = episode_frames(long, prompt="a prompt", assertions=t_long)
    assert len(frames) == 2 and frames[0].shape == frames[1].shape and frames[0].shape[0] >= 20 * 14
    with pytest.raises(ValueError, match=r"tile=50 must be >= 96"):
        contact_sheet(short, tile=50)

