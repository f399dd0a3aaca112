"""Write ``report.md`` and a self-contained ``report.html`` with charts (matplotlib, Agg) from evaluation results
and training curves.

Every chart gives each method the same colour (:func:`method_colors`): the Okabe-Ito palette (Okabe & Ito, 2008),
readable with the common colour-vision deficiencies, extended with Paul Tol's muted scheme for more than eight
methods; the learned policy is always vermillion, the oracle black, critic-greedy blue and random grey.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluate import EpisodeResult, MethodSummary, ci95, paired_difference, summary_table
from agents.html_report import Figure, Gallery, Section, Text, html_document, markdown_document
from agents.stats import DEFAULT_REPS, rliable_json, rliable_markdown, rliable_summary
from poser_env.core.optional import require

__all__ = ["DEEP_ORACLE", "NO_FEEDBACK", "OKABE_ITO", "PALETTE", "ROLE_COLORS", "TOL_MUTED", "claims_table", "method_colors", "plot_expert_heatmap", "plot_learning_curves",
           "plot_rliable", "plot_tag_bars", "write_report"]

#: Okabe-Ito: orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple, black.
OKABE_ITO: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
#: Paul Tol's "muted" scheme (colour-blind safe; https://personal.sron.nl/~pault/), after the Okabe-Ito colours:
#: wine, indigo, olive, teal, rose, sand, cyan, green, purple.
TOL_MUTED: tuple[str, ...] = ("#882255", "#332288", "#999933", "#44AA99", "#CC6677", "#DDCC77", "#88CCEE",
                              "#117733", "#AA4499")
#: Fixed colours of the methods every report has.
ROLE_COLORS: dict[str, str] = {"learned": "#D55E00", "oracle": "#000000", "critic-greedy": "#0072B2",
                               "random": "#ABABAB"}
#: The colours other methods take, in order: Okabe-Ito's without the role colours, then Tol's muted scheme
#: (tableau-colorblind10 was tried: its blues and oranges are too close to Okabe-Ito's to tell 12 methods apart).
PALETTE: tuple[str, ...] = tuple(c for c in (*OKABE_ITO, *TOL_MUTED) if c not in ROLE_COLORS.values())


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A colour per method, the same in every chart of a report: the role colours (:data:`ROLE_COLORS`) for the
    learned policy, the oracle, critic-greedy and random; the other methods, sorted by name, take :data:`PALETTE`
    in order (it repeats after its 14 colours; charts then also differ by hatch or line style)."""
    out: dict[str, str] = {}
    rest = sorted(m for m in dict.fromkeys(methods) if m not in ROLE_COLORS)
    for m in methods:
        if m in ROLE_COLORS:
            out[m] = ROLE_COLORS[m]
    for i, m in enumerate(rest):
        out[m] = PALETTE[i % len(PALETTE)]
    return out


def _plt() -> Any:

    mpl = require("matplotlib", "rl")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Learning-curve panels: curve column -> y-axis label.
CURVE_PANELS: dict[str, str] = {
    "success": "success: every assertion holds (judge)",
    "judge_alignment": "share of assertions that hold (judge)",
    "calls": "expert calls per episode",
    "cost": "cost per episode (SceneSim units)",
}


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path, *,
                         color: str = ROLE_COLORS["learned"], panels: Mapping[str, str] | None = None) -> Path:
    """Training curves, one panel per quantity (default :data:`CURVE_PANELS`: success, assertions holding, calls,
    cost; rolling means over the last training episodes against timesteps): each run (seed) as a thin line, their
    mean over runs at shared timesteps as a thick one."""
    plt = _plt()
    panels = dict(panels or CURVE_PANELS)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), dpi=110, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, (key, label) in zip(axes[0], panels.items()):
        series: dict[float, list[float]] = defaultdict(list)
        for k, (name, pts) in enumerate(sorted(curves.items())):
            pts = [p for p in pts if not math.isnan(float(p.get(key, math.nan)))]
            if not pts:
                continue
            xs = [float(p["timesteps"]) for p in pts]
            ys = [float(p[key]) for p in pts]
            ax.plot(xs, ys, color=color, lw=0.9, alpha=0.55, ls=styles[k % len(styles)], label=name)
            for x, y in zip(xs, ys):
                series[x].append(y)
        full = [x for x, v in sorted(series.items()) if len(v) == len(curves)]
        if len(curves) > 1 and full:
            ax.plot(full, [float(np.mean(series[x])) for x in full], color=color, lw=2.4, label="mean over runs")
        ax.set_xlabel("timesteps")
        ax.set_title(label, fontsize=9)
        if key in ("success", "judge_alignment"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if handles else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tag_bars(summaries: Mapping[str, MethodSummary], path: Path, *,
                  colors: Mapping[str, str] | None = None) -> Path:
    """Grouped bars: judge pass rate per tag for every method, with 95% CI whiskers over runs clipped to [0, 1].

    The legend sits to the right of the axes (it never covers bars); ``fixed:`` pipelines are hatched."""
    plt = _plt()
    tags = sorted({t for s in summaries.values() for t in s.per_tag})
    methods = list(summaries)
    colors = dict(colors or method_colors(methods))
    width = 0.84 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.11 * len(tags) * len(methods) + 3.5), 4.0), dpi=110)
    x = np.arange(len(tags))
    for i, m in enumerate(methods):
        s = summaries[m]
        ys = np.array([s.per_tag.get(t, np.nan) for t in tags], dtype=float)
        es = np.array([s.per_tag_ci.get(t, 0.0) for t in tags], dtype=float)
        lo = np.clip(np.nan_to_num(np.minimum(es, ys)), 0, None)  # whiskers stay inside [0, 1]
        hi = np.clip(np.nan_to_num(np.minimum(es, 1.0 - ys)), 0, None)
        ax.bar(x + i * width - 0.42 + width / 2, ys, width, yerr=np.vstack([lo, hi]), label=m,
               color=colors.get(m, "#888888"), edgecolor="white" if not m.startswith("fixed") else "#333333",
               linewidth=0.4, hatch="///" if m.startswith("fixed") else None, capsize=1.5,
               error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
    ax.set_xticks(x, tags, rotation=0, fontsize=8)
    ax.set_ylabel("judge pass rate")
    ax.set_ylim(0, 1.0)
    ax.set_xlim(-0.5, len(tags) - 0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_expert_heatmap(results: Sequence[EpisodeResult], method: str, path: Path) -> Path:
    """Share of each expert's calls by prompt type (tag) for one method."""
    plt = _plt()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        if r.method == method:
            for e in r.experts:
                counts[r.tag][e] += 1
    tags = sorted(counts)
    experts = sorted({e for c in counts.values() for e in c})
    mat = np.zeros((len(tags), len(experts)))
    for i, t in enumerate(tags):
        tot = max(1, sum(counts[t].values()))
        for j, e in enumerate(experts):
            mat[i, j] = counts[t][e] / tot
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(experts) + 2), max(2.5, 0.45 * len(tags) + 1.5)), dpi=110)
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=max(0.01, float(mat.max()) if mat.size else 1.0))
    ax.set_xticks(range(len(experts)), experts, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(tags)), tags, fontsize=8)
    if mat.size <= 120:
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] < 0.6 * max(0.01, float(mat.max())) else "black")
    ax.set_title(f"{method}: share of calls per expert", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


#: Name of the "no feedback in the observation" ablation in the main job's results (issue 15's feedback claim).
NO_FEEDBACK = "learned (no feedback in obs)"
#: Name of the deep oracle (search over the whole step budget with the judge; the ceiling).
DEEP_ORACLE = "oracle-deep"


def _on_prompts(results: Sequence[EpisodeResult], prompts: set[str]) -> list[EpisodeResult]:
    return [r for r in results if r.prompt in prompts]


def _paired_prompts(results: Sequence[EpisodeResult], a: str, b: str,
                    prompts: set[str]) -> tuple[float, float, int] | None:
    """Mean and 95% half-width (Student t over prompts) of the per-prompt judge pass difference ``a - b`` on
    ``prompts`` (each method's pass rate over its runs of that prompt): the pairing for a method run once per
    prompt, like the deep oracle."""
    per: dict[str, dict[str, list[float]]] = {a: defaultdict(list), b: defaultdict(list)}
    for r in results:
        if r.method in per and r.prompt in prompts:
            per[r.method][r.prompt].append(float(r.judge_pass))
    common = sorted(set(per[a]) & set(per[b]))
    if not common:
        return None
    diffs = [float(np.mean(per[a][p]) - np.mean(per[b][p])) for p in common]
    return float(np.mean(diffs)), ci95(diffs), len(common)


def _best_fixed(summaries: Mapping[str, MethodSummary], key: str) -> MethodSummary | None:
    cands = [m for n, m in summaries.items() if n.startswith("fixed:")
             and (m.long_all if key == "long" else m.geneval_overall) is not None]
    return max(cands, key=lambda m: float((m.long_all if key == "long" else m.geneval_overall) or 0.0), default=None)


def _v1_rows(summaries: Mapping[str, MethodSummary], learned: str,
             results: Sequence[EpisodeResult] | None) -> list[str]:
    """The claims of issue 15 (real decisions), when their methods were evaluated: headroom of the deep oracle over
    the best fixed pipeline (>= +0.25, long), the best single expert's GenEval-style score in [0.5, 0.75], the learned
    margin over the best fixed pipeline on long prompts (>= +0.10, interval above 0), the share of the fixed-to-oracle
    gap the learned policy closes (>= 50%), GenEval-style at least the best fixed at no higher cost, and the
    no-feedback ablation worse by >= 0.05 (interval above 0). Paired over runs on the prompts both methods ran."""
    rows: list[str] = []
    me = summaries.get(learned)
    fixed_long = _best_fixed(summaries, "long")
    deep = summaries.get(DEEP_ORACLE)
    if results is None or me is None:
        return rows

    def paired(a: str, b: str, key: str, subset: set[str] | None = None) -> tuple[float, float, int] | None:
        res = results if subset is None else _on_prompts(results, subset)
        return paired_difference(res, a, b, key)

    if deep is not None and fixed_long is not None:
        subset = {r.prompt for r in results if r.method == DEEP_ORACLE}
        d = _paired_prompts(results, DEEP_ORACLE, fixed_long.method, subset)
        if d is not None:
            rows.append(f"| headroom: deep oracle - best fixed pipeline (long, all assertions) | - | "
                        f"{fixed_long.method} | {d[0]:+.3f} ± {d[1]:.3f} (paired over {d[2]} prompts) "
                        f"| >= +0.25 | {'yes' if d[0] >= 0.25 else 'no'} |")
            lf = _paired_prompts(results, learned, fixed_long.method, subset)
            if lf is not None and d[0] > 0:
                share = lf[0] / d[0]
                rows.append(f"| learned closes the gap from the best fixed pipeline to the deep oracle (long) | "
                            f"{lf[0]:+.3f} | gap {d[0]:+.3f} | {share:.0%} | >= 50% | {'yes' if share >= 0.5 else 'no'} |")
    singles = [m for n, m in summaries.items() if n.startswith("single:") and m.geneval_overall is not None]
    if singles:
        b = max(singles, key=lambda m: float(m.geneval_overall or 0.0))
        v = float(b.geneval_overall or 0.0)
        rows.append(f"| best single expert, GenEval-style overall, in [0.50, 0.75] | - | {b.method} {v:.3f} | - | "
                    f"[0.50, 0.75] | {'yes' if 0.5 <= v <= 0.75 else 'no'} |")
    if fixed_long is not None and me.long_all is not None:
        lf = paired(learned, fixed_long.method, "long")
        if lf is not None:
            met = "yes" if lf[0] >= 0.10 and lf[0] - lf[1] > 0 else "no"
            rows.append(f"| long: beats the best fixed pipeline by >= 0.10 | {me.long_all:.3f} | {fixed_long.method} "
                        f"{fixed_long.long_all or 0.0:.3f} | {lf[0]:+.3f} ± {lf[1]:.3f} (paired, {lf[2]} runs) | "
                        f">= +0.10, interval > 0 | {met} |")
    fixed_gen = _best_fixed(summaries, "geneval")
    if fixed_gen is not None and me.geneval_overall is not None:
        g = paired(learned, fixed_gen.method, "geneval")
        if g is not None:
            met = "yes" if g[0] >= 0 and me.mean_cost <= fixed_gen.mean_cost else "no"
            rows.append(f"| GenEval-style: at least the best fixed pipeline at no higher cost | "
                        f"{me.geneval_overall:.3f}, cost {me.mean_cost:.2f} | {fixed_gen.method} "
                        f"{fixed_gen.geneval_overall or 0.0:.3f}, cost {fixed_gen.mean_cost:.2f} | {g[0]:+.3f} ± "
                        f"{g[1]:.3f} (paired, {g[2]} runs) | >= 0, cost <= | {met} |")
    if NO_FEEDBACK in summaries:
        a = paired(learned, NO_FEEDBACK, "long")
        if a is not None:
            met = "yes" if a[0] >= 0.05 and a[0] - a[1] > 0 else "no"
            rows.append(f"| the feedback is used: no-feedback ablation worse on long prompts | {me.long_all or 0.0:.3f} "
                        f"| {NO_FEEDBACK} {summaries[NO_FEEDBACK].long_all or 0.0:.3f} | {a[0]:+.3f} ± {a[1]:.3f} "
                        f"(paired, {a[2]} runs) | >= +0.05, interval > 0 | {met} |")
    return rows


def claims_table(summaries: Mapping[str, MethodSummary], learned: str = "learned",
                 results: Sequence[EpisodeResult] | None = None) -> str | None:
    """Markdown table checking the project's claims for ``learned`` against the baselines in ``summaries``.

    Rows: the margin over the best single expert (GenEval-style overall, target >= 0.15; long all-assertions,
    target >= 0.20), over the best fixed pipeline (``fixed`` / ``fixed:<expert>``, best per score; target > 0), the
    fraction of the oracle's score (target >= 0.9) and the mean cost against critic-greedy's (target: not more).

    A margin is "met" only when its whole 95% interval lies above its target: with ``results`` (episodes of both
    methods on the same runs, prompts and seeds) the paired interval of the per-run difference
    (:func:`agents.evaluate.paired_difference`), else the margin ± the combined half-widths
    sqrt(ci_a^2 + ci_b^2). A margin above its target whose interval reaches below it is "not shown (within
    noise)"; a margin at or below its target is "no". Returns None when ``learned`` is missing or no reference is.
    """
    me = summaries.get(learned)
    if me is None:
        return None
    rows: list[str] = ["| claim | learned | reference | margin (95% CI) | target | met |", "|---|---|---|---|---|---|"]

    def score(m: MethodSummary, key: str) -> tuple[float | None, float]:
        if key == "geneval":
            return m.geneval_overall, m.geneval_overall_ci or 0.0
        return m.long_all, m.long_all_ci or 0.0

    def best(prefix: str, key: str) -> MethodSummary | None:
        cands = [m for n, m in summaries.items() if (n == prefix.rstrip(":") or n.startswith(prefix))
                 and score(m, key)[0] is not None]
        return max(cands, key=lambda m: float(score(m, key)[0] or 0.0)) if cands else None

    labels = {"geneval": "GenEval-style overall", "long": "long: all assertions"}
    for key, label in labels.items():
        mine, my_ci = score(me, key)
        if mine is None:
            continue
        for prefix, what, target in (("single:", "best single expert", {"geneval": 0.15, "long": 0.20}[key]),
                                     ("fixed:", "best fixed pipeline", 0.0)):
            ref = best(prefix, key)
            if ref is None:
                continue
            val, ci = score(ref, key)
            margin, half, how = mine - float(val or 0.0), float(np.hypot(my_ci, ci)), "unpaired"
            paired = paired_difference(results, learned, ref.method, key) if results is not None else None
            if paired is not None and paired[2] >= 2:
                margin, half, how = paired[0], paired[1], f"paired, {paired[2]} runs"
            met = "no" if margin <= target else "not shown (within noise)" if margin - half <= target else "yes"
            rows.append(f"| {label}: beats the {what} | {mine:.3f} | {ref.method} {float(val or 0.0):.3f} | "
                        f"{margin:+.3f} ± {half:.3f} ({how}) | > {target:+.2f} | {met} |")
        oracle = summaries.get("oracle")
        if oracle is not None and score(oracle, key)[0]:
            frac = mine / float(score(oracle, key)[0] or 1.0)
            rows.append(f"| {label}: share of the oracle's score | {mine:.3f} | oracle {score(oracle, key)[0]:.3f} | "
                        f"{frac:.0%} | >= 90% | {'yes' if frac >= 0.9 else 'no'} |")
    rows += _v1_rows(summaries, learned, results)
    greedy = summaries.get("critic-greedy")
    if greedy is not None:
        rows.append(f"| mean cost per prompt, at most critic-greedy's | {me.mean_cost:.2f} | critic-greedy "
                    f"{greedy.mean_cost:.2f} | {me.mean_cost - greedy.mean_cost:+.2f} | <= 0 | "
                    f"{'yes' if me.mean_cost <= greedy.mean_cost else 'no'} |")
    return "\n".join(rows) if len(rows) > 2 else None


def _interval_bars(ax: Any, names: Sequence[str], est: Mapping[str, tuple[float, float, float]],
                   colors: Mapping[str, str], halo: list[Any]) -> None:
    """One horizontal bar per name from its interval's low to high end in [0, 1], with a tick at the point
    estimate (``est[name] = (point, low, high)``)."""
    for k, m in enumerate(names):
        pt, lo, hi = est[m]
        ax.barh(k, hi - lo, left=lo, height=0.6, color=colors[m], alpha=0.75)
        ax.plot([pt, pt], [k - 0.3, k + 0.3], color="black", lw=1.5, path_effects=halo)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)


def plot_rliable(summary: Any, out_dir: Path, *, colors: Mapping[str, str] | None = None) -> list[Figure]:
    """rliable's three charts of an :class:`agents.stats.RliableSummary`: IQM and mean with their 95% stratified
    bootstrap intervals (``rliable_intervals.png``), the probability of improvement of the reference method over
    each other method (``rliable_improvement.png``, when there is a reference) and the performance profiles
    (``rliable_profiles.png``). Returns the figures with captions."""
    plt = _plt()
    methods = list(summary.iqm)
    colors = dict(colors or method_colors(methods))
    figs: list[Figure] = []
    order = sorted(methods, key=lambda m: summary.iqm[m][0])
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=4, foreground="white")]  # the tick stays visible on dark bars
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 0.32 * len(methods) + 1.4), dpi=110, sharey=True)
    for ax, (name, est) in zip(axes, (("IQM", summary.iqm), ("mean", summary.mean))):
        _interval_bars(ax, order, est, colors, halo)
        ax.set_xlabel(f"{name} of per-tag judge pass rates")
    fig.tight_layout()
    p = out_dir / "rliable_intervals.png"
    fig.savefig(p)
    plt.close(fig)
    figs.append(Figure(p, "Interquartile mean and mean over runs x tags; bars: 95% stratified bootstrap intervals "
                          "(rliable), black tick: point estimate."))
    if summary.improvement and summary.reference:
        others = sorted(summary.improvement, key=lambda m: summary.improvement[m][0])
        fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(others) + 1.3), dpi=110)
        _interval_bars(ax, others, summary.improvement, colors, halo)
        ax.axvline(0.5, color="#555555", ls="--", lw=1)
        ax.set_xlabel(f"P({summary.reference} > method)")
        fig.tight_layout()
        p = out_dir / "rliable_improvement.png"
        fig.savefig(p)
        plt.close(fig)
        figs.append(Figure(p, f"Probability of improvement of {summary.reference} over each method (0.5 = no "
                              "difference) with 95% stratified bootstrap intervals (rliable)."))
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=110)
    styles = ["-", "--", "-.", ":"]
    for k, m in enumerate(methods):
        ys, lo, hi = summary.profiles[m]
        ax.plot(summary.taus, ys, color=colors[m], lw=2.2 if m == summary.reference else 1.3,
                ls=styles[k % len(styles)] if m != summary.reference else "-", label=m)
        ax.fill_between(summary.taus, lo, hi, color=colors[m], alpha=0.12, lw=0)
    ax.set_xlabel("judge pass rate threshold tau")
    ax.set_ylabel("fraction of runs x tags above tau")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    p = out_dir / "rliable_profiles.png"
    fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    figs.append(Figure(p, "Performance profiles: the fraction of (run, tag) pass rates above each threshold; "
                          "shaded: 95% stratified bootstrap bands (rliable)."))
    return figs


def _example_items(sheets: Sequence[Path]) -> list[Figure]:
    """Gallery items of example episodes: per example folder its captioned GIF (``episode.gif``) and contact
    sheet, captioned with the prompt and the judge's verdict from ``trace.json`` when present."""
    items: list[Figure] = []
    for sheet in sheets:
        d = sheet.parent
        caption = d.name
        trace = d / "trace.json"
        if trace.is_file():
            t = json.loads(trace.read_text())
            verdict = "passes" if t.get("is_success") else "fails"
            n = len(t.get("steps", []))
            caption = f"{d.name}: \"{t.get('prompt', '')}\" ({t.get('policy', 'policy')}, seed {t.get('seed')}): " \
                      f"the judge says it {verdict}; {n} step{'' if n == 1 else 's'}."
        if (d / "episode.gif").is_file():
            items.append(Figure(d / "episode.gif", f"{caption} Animated: one frame per step.", f"{d.name} GIF"))
        items.append(Figure(sheet, f"{caption} Contact sheet: every step with its expert, command and each "
                                   "assertion (tick: holds, cross: fails).", f"{d.name} contact sheet"))
    return items


INTRO = ("All numbers are measured in **SceneSim**, the embedded simulator: they are results about the simulator's "
         "experts and critic, not claims about real diffusion models. Scores are judge-scored (ground-truth scene "
         "graph, GenEval rules) unless marked *critic*. GenEval-style overall = unweighted mean of the six tag pass "
         "rates; long = all-assertions pass rate. ± is the 95% confidence half-width over runs (training seeds "
         "for learned policies, evaluation seeds for baselines); the rliable section gives IQM, mean and "
         "probability of improvement with stratified bootstrap intervals.")


def write_report(
    out_dir: str | Path,
    results: Sequence[EpisodeResult],
    summaries: Mapping[str, MethodSummary],
    *,
    curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    learned: str | None = None,
    contact_sheets: Sequence[Path] = (),
    config: Mapping[str, Any] | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    html: bool = True,
    rliable_reps: int | None = None,
) -> Path:
    """Write ``out_dir/report.md``, its charts and (``html``) the self-contained ``out_dir/report.html``; returns
    the markdown report's path.

    Sections: results table, claims checked (when ``learned`` is evaluated), rliable aggregates (IQM, mean,
    probability of improvement of ``learned``, performance profiles; skipped with a note when rliable is not
    installed), learning curves (success, assertions holding, calls, cost), per-tag pass rates, expert usage of
    ``learned``, example episodes (each contact sheet's folder may hold ``episode.gif`` and ``trace.json``), the
    configuration. ``rliable_reps``: bootstrap resamples (default :data:`agents.stats.DEFAULT_REPS`).
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = method_colors(list(summaries))
    sections: list[Section] = [Section("Results (test split)", [Text(summary_table(summaries))], "results")]
    claims = claims_table(summaries, learned, results) if learned else None
    if claims:
        sections.insert(0, Section("Claims checked", [Text(claims)], "claims"))
    try:
        rl = rliable_summary(results, reference=learned, reps=rliable_reps or DEFAULT_REPS)
    except ImportError as e:  # MissingExtraError is an ImportError
        rl, note = None, f"rliable is not installed ({e}); `pip install \"image-poser[rl]\"` adds it."
    else:
        note = "No method has a result on every tag; rliable needs the same tasks for all." if rl is None else ""
    if rl is not None:
        (out / "rliable.json").write_text(json.dumps(rliable_json(rl), indent=1) + "\n")
        sections.append(Section("Aggregate results (rliable)", [Text(rliable_markdown(rl)),
                                                                *plot_rliable(rl, out, colors=colors)], "rliable"))
    else:
        sections.append(Section("Aggregate results (rliable)", [Text(note)], "rliable"))
    for title, body in extra_sections:
        sections.append(Section(title, [Text(body)]))
    if curves:
        plot_learning_curves(curves, out / "learning_curves.png", color=colors.get(learned or "learned",
                                                                                   ROLE_COLORS["learned"]))
        sections.append(Section("Learning curves", [Figure(
            out / "learning_curves.png", "Training episodes (rolling mean over the last 100), one thin line per "
            "seed, thick: mean over seeds. Success = every assertion holds by the judge (SB3's "
            "rollout/success_rate).")], "curves"))
    plot_tag_bars(summaries, out / "per_tag.png", colors=colors)
    sections.append(Section("Per tag", [Figure(out / "per_tag.png", "Judge pass rate per tag, every method (95% CI "
                                                                    "over runs; fixed pipelines hatched).")], "tags"))
    if learned and learned in summaries:
        plot_expert_heatmap(results, learned, out / "expert_usage.png")
        sections.append(Section("Expert usage", [Figure(out / "expert_usage.png",
                                                        f"Share of {learned}'s calls per expert, by prompt type.")],
                                "experts"))
    if contact_sheets:
        sections.append(Section("Example episodes", [Gallery(tuple(_example_items(contact_sheets)))], "examples"))
    if config:
        sections.append(Section("Configuration", [Text("```json\n" + json.dumps(config, indent=1, default=str)
                                                       + "\n```")], "config"))
    title = "image-poser report"
    path = out / "report.md"
    path.write_text(markdown_document(title, INTRO, sections, out))
    if html:
        (out / "report.html").write_text(html_document(title, INTRO, sections), encoding="utf-8")
    return path
