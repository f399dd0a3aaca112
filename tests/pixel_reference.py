"""Reference digests of SceneSim pixels and critic feedback on a fixed set of episodes.

``python -m tests.pixel_reference`` writes ``tests/data/pixel_reference.json``; ``tests/test_pixels.py`` checks
that the renderer, experts and critic still give byte-identical images and the same feedback.
The cases: random allowed actions in ``poser_env/ImagePoser-v0`` and ``ImagePoserLong-v0`` from fixed seeds
(every expert, every op the plans use), plus hand-made scenes covering every background, style and pattern.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

import poser_env  # noqa: F401
from critic.scene import SceneCritic
from experts.sim.render import render
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.feedback import Feedback
from poser_env.core.spec import BACKGROUNDS, PATTERNS, STYLES, Entity, Spec
from poser_env.env import unwrap

PATH = Path(__file__).resolve().parent / "data" / "pixel_reference.json"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:24]


def _fb_key(fb: Feedback) -> str:
    parts = [f"{fb.alignment:.6f}", f"{fb.fidelity:.6f}", f"{fb.aesthetics:.6f}", fb.text,
             fb.background or "", fb.style or ""]
    parts += [f"{v.assertion_id}:{v.holds}:{v.confidence:.6f}" for v in fb.verdicts]
    parts += [f"{d.label}:{d.box}:{d.score:.6f}:{d.color}:{d.pattern}:{d.size}" for d in fb.detections]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def episode_digests(env_id: str, seed: int, steps: int) -> list[str]:
    env = gym.make(env_id, text_encoder="hashing")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    out = []
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        valid = np.flatnonzero(mask[:-1])
        a = int(rng.choice(valid)) if len(valid) else int(len(mask) - 1)
        obs, r, term, trunc, info = env.step(a)
        canvas = env.unwrapped.canvas
        fb = unwrap(env).state.feedback
        out.append(f"{a}:{_digest(canvas) if canvas is not None else '-'}:{_fb_key(fb) if fb else '-'}:{float(r):.6f}")
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))
    env.close()
    return out


def scene_digests() -> list[str]:
    critic = SceneCritic()
    out = []
    k = 0
    for bg in BACKGROUNDS:
        for st in STYLES:
            for size in (128, 96):
                f = size / 128.0
                objs = tuple(
                    SceneObject(n, c, PATTERNS[(k + i) % len(PATTERNS)], "medium",
                                (x * f, y * f, (x + w) * f, (y + w) * f), glyph_noise=0.05 * ((k + i) % 5))
                    for i, (n, c, x, y, w) in enumerate([("clock", "red", 6.3, 8.1, 22.4), ("dog", "blue", 60.2, 12.0, 31.0),
                                                         ("teddy bear", "yellow", 20.0, 70.5, 15.2),
                                                         ("car", "green", 70.0, 70.0, 22.0)]))
                arts = (Artifact(30.0 * f, 30.0 * f, 4.0, 0.5, k),) if k % 3 == 0 else ()
                scene = Scene(size, size, bg, st, objs, arts, 1.0 - 0.05 * (k % 4), k)
                img = render(scene)
                spec = Spec((Entity("clock", 1, "red"), Entity("dog", 1, None, "striped")), background=bg, style=st)
                out.append(f"{_digest(img)}:{_fb_key(critic(img, spec))}")
                k += 1
    return out


def compute() -> dict[str, list[str]]:
    return {
        "v0": episode_digests("poser_env/ImagePoser-v0", 7, 300),
        "long": episode_digests("poser_env/ImagePoserLong-v0", 11, 200),
        "scenes": scene_digests(),
    }


if __name__ == "__main__":
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(json.dumps(compute(), indent=0))
    print(f"wrote {PATH}", file=sys.stderr)
