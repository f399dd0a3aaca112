"""Headroom of SceneSim: how far single text-to-image experts are from an oracle pipeline.

For the test split of the project's prompt generators, the ground-truth judge scores:

* each single T2I expert (one ``generate`` call with the prompt, ``--seeds`` seeds per prompt);
* ``oracle-1``: the best of the T2I experts for each prompt and seed (one call, chosen with the judge);
* ``oracle-3``: a search over every pipeline of up to 3 calls with judge access: a T2I call with the prompt,
  then edit commands written from the judge's failing verdicts (by ``poser_env.planner``'s fix writer),
  each tried with every editor that supports its op; it stops at the first pipeline that passes.

Per GenEval tag: the fraction of images that pass; ``overall``: GenEval's unweighted mean of the six.
Long prompts: ``long-pass`` (all assertions hold) and ``long-align`` (mean fraction of assertions holding).

Run::

    PYTHONPATH=. python examples/benchmarks/headroom.py --n-per-tag 40 --seeds 4 --n-long 40
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tyro

from experts.registry import default_sim_experts
from experts.sim.judge import SceneJudge, geneval_overall, is_pass
from poser_env.core.expert import Expert, ExpertOutput
from poser_env.core.feedback import Feedback
from poser_env.core.spec import GENEVAL_TAGS, Spec
from poser_env.core.text import stable_hash
from poser_env.planner import fix_command
from poser_env.prompts import geneval_style, long_prompts


@dataclass(frozen=True)
class Args:
    n_per_tag: int = 40
    seeds: int = 4
    n_long: int = 40
    depth: int = 3
    beam: int = 8


def _fix_commands(spec: Spec, fb: Feedback) -> list[str]:
    """Edit commands for the failing assertions (the planner's fix writer, one per failing assertion)."""
    out: list[str] = []
    for v in fb.verdicts:
        if v.ok:
            continue
        c = fix_command(spec, spec.assertion(v.assertion_id), fb)
        if c is not None and c.text not in out:
            out.append(c.text)
    return out


def oracle(spec: Spec, seed: int, t2i: Sequence[Expert], editors: Sequence[Expert], judge: SceneJudge,
           depth: int, beam: int = 8) -> tuple[bool, float]:
    """Breadth-first search over pipelines of up to ``depth`` calls; (passed, best alignment).

    Every T2I expert starts a pipeline; at each further level every fix command of every kept image is tried
    with every editor supporting it. Only the ``beam`` best images (by judge alignment) of a level are
    extended (GenEval-style prompts never reach the limit; it bounds the search on long prompts)."""
    best = 0.0
    frontier: list[tuple[ExpertOutput, Feedback]] = []
    for e in t2i:  # level 0: one call
        out = e("generate: " + spec.prompt, seed=seed)
        fb = judge(out.state, spec)
        best = max(best, fb.alignment)
        if is_pass(fb):
            return True, 1.0
        frontier.append((out, fb))
    for level in range(1, depth):
        nxt: list[tuple[ExpertOutput, Feedback]] = []
        for out, fb in frontier:
            for cmd in _fix_commands(spec, fb):
                op = cmd.split(":", 1)[0]
                for ed in editors:
                    if not ed.supports(op):
                        continue
                    s = stable_hash("oracle", seed, level, cmd, ed.name, bits=62)
                    try:
                        o2 = ed(cmd, out.image, seed=s, state=out.state)
                    except ValueError:
                        continue
                    f2 = judge(o2.state, spec)
                    best = max(best, f2.alignment)
                    if is_pass(f2):
                        return True, 1.0
                    nxt.append((o2, f2))
        frontier = sorted(nxt, key=lambda of: -of[1].alignment)[:beam]
    return False, best


def main(args: Args) -> dict[str, dict[str, float]]:
    judge = SceneJudge()
    experts = default_sim_experts()
    t2i = [e for e in experts if e.kind == "text-to-image"]
    editors = [e for e in experts if e.kind == "image-to-image"]
    gen = geneval_style("test", args.n_per_tag * len(GENEVAL_TAGS))
    longs = long_prompts("test", args.n_long)
    seeds = [1000 + k for k in range(args.seeds)]

    runners: dict[str, Callable[[Spec, int], tuple[bool, float]]] = {}
    for e in t2i:
        def single(spec: Spec, seed: int, e: Expert = e) -> tuple[bool, float]:
            fb = judge(e("generate: " + spec.prompt, seed=seed).state, spec)
            return is_pass(fb), fb.alignment
        runners[e.name] = single
    runners["oracle-1"] = lambda spec, seed: oracle(spec, seed, t2i, editors, judge, 1)
    runners[f"oracle-{args.depth}"] = lambda spec, seed: oracle(spec, seed, t2i, editors, judge, args.depth, args.beam)

    table: dict[str, dict[str, float]] = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        per_tag: dict[str, list[bool]] = {t: [] for t in GENEVAL_TAGS}
        for spec in gen:
            for s in seeds:
                per_tag[str(spec.tag)].append(run(spec, s)[0])
        row = {t: sum(v) / len(v) for t, v in per_tag.items()}
        row["overall"] = geneval_overall(per_tag)
        res = [run(spec, s) for spec in longs for s in seeds]
        row["long-pass"] = sum(p for p, _ in res) / max(1, len(res))
        row["long-align"] = sum(a for _, a in res) / max(1, len(res))
        row["seconds"] = time.perf_counter() - t0
        table[name] = row
    cols = [*GENEVAL_TAGS, "overall", "long-pass", "long-align"]
    print(f"test split: {args.n_per_tag} prompts per tag, {len(longs)} long prompts, {args.seeds} seeds each\n")
    print("| expert | " + " | ".join(cols) + " | seconds |")
    print("|---|" + "---|" * (len(cols) + 1))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + f" | {row['seconds']:.1f} |")
    singles = {e.name: table[e.name]["overall"] for e in t2i}
    best = max(singles, key=singles.__getitem__)
    print(f"\nbest single expert: {best} ({singles[best]:.3f}); oracle-{args.depth} - best = "
          f"{table[f'oracle-{args.depth}']['overall'] - singles[best]:+.3f}")
    for t in cols:
        top = max((e.name for e in t2i), key=lambda n: table[n][t])
        print(f"  best single on {t}: {top} ({table[top][t]:.3f})")
    return table



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
