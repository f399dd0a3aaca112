"""Median time of one SceneSim expert call at 128x128 with 6 entities (goal <= 2 ms each on one core).

Reports, per expert: the whole call (parse [cached] + scene + render), the scene work alone (render stubbed
out), and the render alone of the resulting scene. Not a test: timings depend on the machine.

Run::

    PYTHONPATH=. python examples/benchmarks/expert_speed.py --repeats 200
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tyro

import experts.sim.experts as sim
from experts.registry import SIM_EXPERT_NAMES, make_expert
from experts.sim.render import render
from poser_env.core.expert import ExpertOutput

PROMPT = ("generate: two red clocks left of a blue dog, a small striped cup, a green book above the dog, "
          "a large yellow kite and a dotted vase")  # 6 groups, 7 objects
EDITS = {
    "add": "add: a pink cat right of the dog",
    "remove": "remove: the cup",
    "recolor": "recolor: make the second clock blue",
    "retexture": "retexture: make the clocks striped",
    "move": "move: put the dog right of the vase",
    "resize": "resize: make the dog large",
    "background": "background: change the background to grass",
    "restyle": "restyle: make it a watercolor",
    "refine": "refine: improve the details",
}


@dataclass(frozen=True)
class Args:
    repeats: int = 200
    canvas_size: int = 128


def median_ms(fn: Callable[[int], object], repeats: int) -> float:
    for s in range(5):
        fn(s)
    times = []
    for s in range(repeats):
        t0 = time.perf_counter()
        fn(s)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(args: Args) -> None:
    base = make_expert("sim/layout", canvas_size=args.canvas_size, max_entities=10)(PROMPT, seed=0)
    print(f"canvas {args.canvas_size}x{args.canvas_size}; base scene: {len(base.state.objects)} objects\n")
    print("| expert | command | call ms | scene ms (no render) | render ms |")
    print("|---|---|---|---|---|")
    real_render = sim._render
    for name in SIM_EXPERT_NAMES:
        e = make_expert(name, canvas_size=args.canvas_size)
        if e.kind == "text-to-image":
            cmd = PROMPT

            def call(s: int, e=e, cmd=cmd) -> ExpertOutput:
                return e(cmd, seed=s)
        else:
            op = sorted(e.ops)[0]
            cmd = EDITS[op]

            def call(s: int, e=e, cmd=cmd) -> ExpertOutput:
                return e(cmd, base.image, seed=s, state=base.state)
        full = median_ms(call, args.repeats)
        blank = np.zeros((args.canvas_size, args.canvas_size, 3), np.uint8)
        sim._render = lambda scene: blank  # type: ignore[assignment]
        try:
            scene_only = median_ms(call, args.repeats)
        finally:
            sim._render = real_render
        state = call(0).state
        rend = median_ms(lambda s, st=state: render(st), args.repeats)
        print(f"| {name} | `{cmd.split(':')[0]}` | {full:.2f} | {scene_only:.2f} | {rend:.2f} |")



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
