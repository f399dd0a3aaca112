"""Scene critic vs ground-truth judge: per-assertion agreement on images from every SceneSim expert.

Images come from the test prompt split (GenEval-style and long prompts):

* single calls: every text-to-image expert on every prompt (``"generate: <prompt>"``);
* pipelines of 2-3 calls: a text-to-image expert, then commands from the planner revised with the critic's
  feedback, each run by an editor that supports its operation; when the plan has nothing left, a
  command for an editor not used yet (round robin), so every editor appears.

For every image the pixel critic (:class:`critic.scene.SceneCritic`, pixels + spec only) and the judge
(:class:`experts.sim.judge.SceneJudge`, scene graph) give verdicts; we report agreement per assertion kind, per
expert, a calibration table (critic confidence = P(holds) in bins vs how often the judge says it holds) and
the critic's median time per image.

Run::

    PYTHONPATH=. python examples/benchmarks/critic_agreement.py --geneval 120 --long 40
    PYTHONPATH=. python examples/benchmarks/critic_agreement.py --glyph-variants 8 --noise-bank  # opt-in cards
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import tyro

from critic.scene import SceneCritic
from experts.registry import default_expert_names, make_expert
from experts.sim.judge import SceneJudge
from poser_env.core.spec import Spec
from poser_env.planner import Planner
from poser_env.prompts import geneval_style, long_prompts


@dataclass
class Args:
    geneval: int = 120
    long: int = 40
    seed: int = 0
    canvas: int = 128
    show_errors: int = 0
    critic_noise: float = 0.0  # SceneCritic(noise=...): emulate a weaker critic
    glyph_variants: int = 0  # every expert's card glyph_variants (0: continuous glyph noise, as the cards ship)
    noise_bank: bool = False  # every expert's card noise_bank (degradation noise from a fixed field)


def _coverage_command(op: str, spec: Spec, rng: np.random.Generator) -> str:
    from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, STYLES

    e = spec.entities[int(rng.integers(len(spec.entities)))]
    the = f"the {e.noun}"
    return {
        "add": f"add: {e.phrase()}",
        "remove": f"remove: {the}",
        "recolor": f"recolor: make {the} {rng.choice(COLORS)}",
        "retexture": f"retexture: make {the} {rng.choice(PATTERNS[1:])}",
        "move": f"move: put {the} {rng.choice(['left of', 'right of', 'above', 'below'])} the canvas centre",
        "resize": f"resize: make {the} {rng.choice(['small', 'medium', 'large'])}",
        "background": f"background: change the background to {rng.choice(BACKGROUNDS)}",
        "restyle": f"restyle: make it {rng.choice(STYLES)}",
        "refine": "refine: improve the details",
    }[op]


def main(args: Args) -> None:
    names = default_expert_names()
    variants: dict[str, object] = {"glyph_variants": args.glyph_variants} if args.glyph_variants else {}
    if args.noise_bank:
        variants["noise_bank"] = True
    experts = {n: make_expert(n, canvas_size=args.canvas, **variants) for n in names}
    t2i = [n for n in names if experts[n].kind == "text-to-image"]
    editors = [n for n in names if experts[n].kind == "image-to-image"]
    specs = geneval_style("test", args.geneval, seed=args.seed) + long_prompts("test", args.long, seed=args.seed)
    critic, judge, planner = SceneCritic(noise=args.critic_noise, seed=args.seed), SceneJudge(), Planner()
    rng = np.random.default_rng(args.seed)

    agree: dict[str, list[bool]] = defaultdict(list)
    by_expert: dict[str, list[bool]] = defaultdict(list)
    by_source: dict[str, list[bool]] = defaultdict(list)
    calib: list[tuple[float, bool, bool]] = []
    times: list[float] = []
    cpu: list[float] = []
    errors: list[str] = []
    image_pass = {"critic": 0, "judge": 0, "same": 0, "n": 0}
    rr = 0

    def record(out, spec: Spec, label: str, source: str) -> None:
        t0, u0 = time.perf_counter(), time.thread_time()
        fb = critic(out.image, spec)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - u0)
        jb = judge(out.state, spec)
        for v, u in zip(fb.verdicts, jb.verdicts, strict=True):
            ok = v.holds == u.holds
            agree[v.kind].append(ok)
            by_expert[label].append(ok)
            by_source[source].append(ok)
            if v.holds != "unknown":
                calib.append((v.confidence, u.ok, ok))
            if not ok and len(errors) < args.show_errors:
                errors.append(f"[{label}] {v.assertion_id} critic: {v.reason} | judge: {u.reason} | {spec.prompt[:70]}")
        image_pass["n"] += 1
        image_pass["critic"] += fb.all_hold
        image_pass["judge"] += all(v.ok for v in jb.verdicts)
        image_pass["same"] += fb.all_hold == all(v.ok for v in jb.verdicts)

    for si, spec in enumerate(specs):
        prompt = spec.prompt
        for n in t2i:
            out = experts[n](f"generate: {prompt}", seed=int(rng.integers(2**31)))
            record(out, spec, n, "single")
        # one pipeline of 2-3 calls per prompt
        n0 = t2i[si % len(t2i)]
        out = experts[n0](f"generate: {prompt}", seed=int(rng.integers(2**31)))
        plan = planner.plan(spec)
        fb = critic(out.image, spec)
        plan = planner.revise(plan, fb)
        steps = 2 + si % 2
        for _ in range(steps - 1):
            cmd = plan.current
            if cmd is not None and cmd.op != "generate" and any(experts[e].supports(cmd.op) for e in editors):
                ed = next(e for e in editors if experts[e].supports(cmd.op))
                text = cmd.text
            else:
                ed = editors[rr % len(editors)]
                rr += 1
                op = sorted(experts[ed].ops)[int(rng.integers(len(experts[ed].ops)))]
                text = _coverage_command(op, spec, rng)
            try:
                out = experts[ed](text, out.image, seed=int(rng.integers(2**31)), state=out.state,
                                  detections=fb.detections)
            except ValueError as exc:  # a command this editor cannot parse: skip the step
                errors.append(f"skipped {ed} {text!r}: {exc}") if len(errors) < args.show_errors else None
                continue
            record(out, spec, ed, "pipeline")
            fb = critic(out.image, spec)
            if cmd is not None:
                plan = planner.revise(plan, fb)

    total = [x for v in agree.values() for x in v]
    print(f"images: {image_pass['n']}  prompts: {len(specs)} (geneval-style {args.geneval}, long {args.long}, test split)")
    print(f"overall per-assertion agreement: {np.mean(total):.4f} over {len(total)} verdicts")
    print(f"per-image pass/fail agreement: {image_pass['same'] / image_pass['n']:.4f} "
          f"(critic pass rate {image_pass['critic'] / image_pass['n']:.3f}, judge {image_pass['judge'] / image_pass['n']:.3f})")
    print(f"median critic time per {args.canvas}x{args.canvas} image: {np.median(times) * 1e3:.3f} ms "
          f"(p90 {np.quantile(times, 0.9) * 1e3:.3f} ms); CPU time median {np.median(cpu) * 1e3:.3f} ms "
          "(not inflated by other processes on the core)")
    print("\n| assertion kind | verdicts | agreement |\n|---|---:|---:|")
    for k in sorted(agree):
        print(f"| {k} | {len(agree[k])} | {np.mean(agree[k]):.4f} |")
    print("\n| source | verdicts | agreement |\n|---|---:|---:|")
    for k in sorted(by_source):
        print(f"| {k} | {len(by_source[k])} | {np.mean(by_source[k]):.4f} |")
    print("\n| expert (last call) | verdicts | agreement |\n|---|---:|---:|")
    for k in names:
        if k in by_expert:
            print(f"| {k} | {len(by_expert[k])} | {np.mean(by_expert[k]):.4f} |")
    print("\n| critic P(holds) | verdicts | judge says holds | critic agrees |\n|---|---:|---:|---:|")
    conf = np.array([c for c, _, _ in calib])
    truth = np.array([t for _, t, _ in calib])
    okv = np.array([o for _, _, o in calib])
    edges = np.linspace(0, 1, 11)
    for lo, hi in itertools.pairwise(edges):
        m = (conf >= lo) & ((conf < hi) | ((hi == 1.0) & (conf <= 1.0)))
        if m.any():
            print(f"| [{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'} | {int(m.sum())} | {truth[m].mean():.3f} | {okv[m].mean():.3f} |")
    brier = float(np.mean((conf - truth) ** 2))
    print(f"\nBrier score of critic confidence vs judge: {brier:.4f}")
    for e in errors:
        print(e)



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
