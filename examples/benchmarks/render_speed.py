"""Median time of SceneSim's renderer and of the pixel critic, one core, 128x128 with 6 entities.

Scenes: 6 objects of random nouns, colours, patterns and sizes (2+ px apart), every background and style,
quality 1 (clean) and 0.7 with two artifacts (degraded). The critic is timed on the same images with a spec
naming the 6 objects' attributes and two relations. Timings exclude first calls (cache warm-up).

Run::

    PYTHONPATH=. python examples/benchmarks/render_speed.py --scenes 96 --repeats 20
    PYTHONPATH=. python examples/benchmarks/render_speed.py --scenes 4 --repeats 1 --save-grid scenesim.png
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import tyro

from critic.scene import SceneCritic
from experts.sim.render import render
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.geometry import SIZE_FRACTION
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, SIZES, STYLES, Entity, Relation, Spec

NOUNS = ("clock", "dog", "cat", "teddy bear", "car", "apple", "cup", "bench", "horse", "kite", "vase", "laptop")


@dataclass
class Args:
    scenes: int = 96
    repeats: int = 20
    canvas: int = 128
    seed: int = 0
    save_grid: str = ""  # optional PNG path: one example scene per (style row, background column), for the README


def make_case(rng: np.random.Generator, k: int, canvas: int) -> tuple[Scene, Spec]:
    objs: list[SceneObject] = []
    ents: list[Entity] = []
    cell = canvas / 3
    nouns = rng.choice(NOUNS, 6, replace=False)
    for i in range(6):
        size = str(rng.choice(SIZES))
        side = SIZE_FRACTION[size] * canvas
        cx, cy = (i % 3) * cell, (i // 3) * cell * 1.5
        x = cx + rng.uniform(1, cell - side - 1)
        y = cy + rng.uniform(1, cell * 1.5 - side - 1)
        color, pattern = str(rng.choice(COLORS)), str(rng.choice(PATTERNS))
        objs.append(SceneObject(str(nouns[i]), color, pattern, size, (x, y, x + side, y + side), 0.1))
        ents.append(Entity(str(nouns[i]), 1, color, pattern, size))
    degraded = k % 2 == 1
    arts = (Artifact(30.0, 30.0, 4.0, 0.5, 1), Artifact(90.0, 100.0, 5.0, 0.4, 2)) if degraded else ()
    scene = Scene(canvas, canvas, BACKGROUNDS[k % len(BACKGROUNDS)], STYLES[(k // len(BACKGROUNDS)) % len(STYLES)],
                  tuple(objs), arts, 0.7 if degraded else 1.0, int(rng.integers(2**31)))
    spec = Spec(tuple(ents), (Relation(0, "left of", 1), Relation(3, "below", 0)), background=scene.background,
                style=scene.style)
    return scene, spec


def save_grid(path: str, canvas: int, seed: int) -> None:
    """Save a grid of example renders: rows are styles, columns backgrounds (same objects everywhere)."""
    from PIL import Image

    scene, _ = make_case(np.random.default_rng(seed), 0, canvas)
    rows = [np.concatenate([render(Scene(canvas, canvas, b, s, scene.objects)) for b in BACKGROUNDS], axis=1)
            for s in STYLES]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    print(f"saved {path}: rows {list(STYLES)}, columns {list(BACKGROUNDS)}")


def main(args: Args) -> None:
    if args.save_grid:
        save_grid(args.save_grid, args.canvas, args.seed)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    rng = np.random.default_rng(args.seed)
    cases = [make_case(rng, k, args.canvas) for k in range(args.scenes)]
    critic = SceneCritic()
    for scene, spec in cases:  # warm caches (background layers, glyphs, colour tables)
        critic(render(scene), spec)
    # wall time (perf_counter) and CPU time of this thread (thread_time: not inflated when other processes
    # share the core)
    r_clean, r_deg, c_all = [], [], []
    rc_clean, rc_deg, cc_all = [], [], []
    for _ in range(args.repeats):
        for scene, spec in cases:
            t0, u0 = time.perf_counter(), time.thread_time()
            img = render(scene)
            t1, u1 = time.perf_counter(), time.thread_time()
            critic(img, spec)
            t2, u2 = time.perf_counter(), time.thread_time()
            (r_deg if scene.quality < 1 else r_clean).append(t1 - t0)
            (rc_deg if scene.quality < 1 else rc_clean).append(u1 - u0)
            c_all.append(t2 - t1)
            cc_all.append(u2 - u1)
    ms = 1e3
    print(f"{args.scenes} scenes x {args.repeats} repeats, {args.canvas}x{args.canvas}, 6 entities, one core")
    print("| what | median wall ms | p90 wall ms | median CPU ms |\n|---|---:|---:|---:|")
    rows = (
        ("render, clean (quality 1)", r_clean, rc_clean),
        ("render, degraded (quality 0.7, 2 artifacts)", r_deg, rc_deg),
        ("render, all", r_clean + r_deg, rc_clean + rc_deg),
        ("scene critic (pixels + spec)", c_all, cc_all),
    )
    for name, xs, cs in rows:
        print(f"| {name} | {np.median(xs) * ms:.3f} | {np.quantile(xs, 0.9) * ms:.3f} | {np.median(cs) * ms:.3f} |")



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
