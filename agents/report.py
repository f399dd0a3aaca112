"""Write ``report.md`` with PNG charts from evaluation results and training curves (matplotlib, Agg)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluate import EpisodeResult, MethodSummary, paired_difference, summary_table

__all__ = ["plot_expert_heatmap", "plot_learning_curves", "plot_tag_bars", "write_report"]


def _plt() -> Any:
    from poser_env.core.optional import require

    mpl = require("matplotlib", "rl")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path, *,
                         key: str = "success") -> Path:
    """One line per run: ``key`` (mean over recent episodes) against timesteps."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for name, pts in sorted(curves.items()):
        if not pts:
            continue
        xs = [p["timesteps"] for p in pts]
        ys = [p.get(key, np.nan) for p in pts]
        ax.plot(xs, ys, label=name, lw=1.5)
    ax.set_xlabel("timesteps")
    ax.set_ylabel(f"{key} (training episodes, critic-scored)" if key != "success" else "judge pass rate (training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_tag_bars(summaries: Mapping[str, MethodSummary], path: Path) -> Path:
    """Grouped bars: judge pass rate per tag for every method, with 95% CI whiskers over runs."""
    plt = _plt()
    tags = sorted({t for s in summaries.values() for t in s.per_tag})
    methods = list(summaries)
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tags) + 2), 3.8), dpi=110)
    x = np.arange(len(tags))
    for i, m in enumerate(methods):
        s = summaries[m]
        ys = [s.per_tag.get(t, np.nan) for t in tags]
        es = [s.per_tag_ci.get(t, 0.0) for t in tags]
        ax.bar(x + i * width - 0.4 + width / 2, ys, width, yerr=es, label=m, capsize=2)
    ax.set_xticks(x, tags, rotation=20, fontsize=8)
    ax.set_ylabel("judge pass rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
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
    ax.set_title(f"{method}: share of calls per expert", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    greedy = summaries.get("critic-greedy")
    if greedy is not None:
        rows.append(f"| mean cost per prompt, at most critic-greedy's | {me.mean_cost:.2f} | critic-greedy "
                    f"{greedy.mean_cost:.2f} | {me.mean_cost - greedy.mean_cost:+.2f} | <= 0 | "
                    f"{'yes' if me.mean_cost <= greedy.mean_cost else 'no'} |")
    return "\n".join(rows) if len(rows) > 2 else None


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
) -> Path:
    """Write ``out_dir/report.md`` and its charts; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts: list[tuple[str, str]] = []
    if curves:
        plot_learning_curves(curves, out / "learning_curves.png")
        charts.append(("Learning curves", "learning_curves.png"))
    plot_tag_bars(summaries, out / "per_tag.png")
    charts.append(("Judge pass rate per tag, every method (95% CI over runs)", "per_tag.png"))
    if learned and learned in summaries:
        plot_expert_heatmap(results, learned, out / "expert_usage.png")
        charts.append((f"Expert usage by prompt type ({learned})", "expert_usage.png"))
    lines = [
        "# image-poser report",
        "",
        "All numbers are measured in **SceneSim**, the embedded simulator: they are results about the simulator's "
        "experts and critic, not claims about real diffusion models.",
        "",
        "Scores are judge-scored (ground-truth scene graph, GenEval rules) unless marked *critic*. "
        "GenEval-style overall = unweighted mean of the six tag pass rates; long = all-assertions pass rate. "
        "± is the 95% confidence half-width over runs (training seeds for learned policies, evaluation seeds for "
        "baselines).",
        "",
        "## Results (test split)",
        "",
        summary_table(summaries),
        "",
    ]
    claims = claims_table(summaries, learned, results) if learned else None
    if claims:
        lines += ["## Claims checked", "", claims, ""]
    for title, body in extra_sections:
        lines += [f"## {title}", "", body, ""]
    for title, fname in charts:
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    if contact_sheets:
        lines += ["## Example episodes", ""]
        for p in contact_sheets:
            lines += [f"![{p.stem}]({p.relative_to(out) if p.is_relative_to(out) else p})", ""]
    if config:
        lines += ["## Configuration", "", "```json", json.dumps(config, indent=1, default=str), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
