"""Benchmark (not a test): batching, output cache and wrapper overhead of diffusers experts, on CPU.

Builds tiny random pipelines in code (experts/testing.py), loads them through a registry file by
path, and measures side by side in one run (best of ``repeats`` timings each):

1. 8 requests as one batched pipeline call vs 8 sequential calls (goal: >= 2x throughput);
2. a cache hit vs computing the image (goal: >= 100x);
3. the expert's own overhead (validation, prompt/mask preparation, output conversion and checks) vs the
   bare pipeline call it wraps.

Tiny pipelines have almost no arithmetic, so (1) mostly measures per-call overhead amortised by
batching; on a GPU with real models the gain comes from better device utilisation instead and depends on
the model and resolution.

Run:  PYTHONPATH=. python examples/benchmarks/diffusers_perf.py [--size 32] [--steps 4] [--threads 1]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


@dataclass(frozen=True)
class Args:
    size: int = 32  # image side in pixels (the tests use 32)
    steps: int = 4  # denoising steps
    batch: int = 8  # requests per batch
    repeats: int = 5  # timings per measurement (the best is kept)
    threads: int = 1  # torch intra-op threads


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(args: Args) -> dict[str, float]:
    import torch

    from experts.diffusers import batch_call, load_diffusers_experts
    from experts.testing import save_tiny_pipelines, write_tiny_registry

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reg = write_tiny_registry(root / "registry.toml", save_tiny_pipelines(root, kinds=("text-to-image",)),
                                  size=args.size, steps=args.steps)
        (expert,) = load_diffusers_experts(reg, ["tiny-t2i"], local_files_only=True, max_batch=args.batch)
        (cached,) = load_diffusers_experts(reg, ["tiny-t2i"], local_files_only=True, cache_dir=root / "cache")
        requests = [(f"generate: object number {i}", None, i) for i in range(args.batch)]
        expert("generate: warm up", seed=0)  # load weights, warm caches

        seq = best_of(lambda: [expert(c, i, seed=s) for c, i, s in requests], args.repeats)
        bat = best_of(lambda: batch_call(expert, requests), args.repeats)

        cached("generate: a cached cup", seed=1)  # fill the entry
        miss = best_of(lambda: expert("generate: a cached cup", seed=1), args.repeats)
        hit = best_of(lambda: cached("generate: a cached cup", seed=1), args.repeats * 20)
        assert cached("generate: a cached cup", seed=1).metadata["cache"] == "hit"

        pipe = expert.load()

        def bare() -> object:
            return pipe(prompt=["a cup"], num_inference_steps=args.steps, guidance_scale=5.0, width=args.size,
                        height=args.size, generator=[torch.Generator("cpu").manual_seed(1)], output_type="np")

        raw = best_of(bare, args.repeats)
        wrapped = best_of(lambda: expert("generate: a cup", seed=1), args.repeats)
        env_step, inside = _env_overhead(reg, root)

    res = {
        "sequential_s": seq, "batched_s": bat, "batch_speedup": seq / bat,
        "compute_s": miss, "cache_hit_s": hit, "cache_speedup": miss / hit,
        "pipeline_s": raw, "expert_s": wrapped, "overhead_s": wrapped - raw,
        "env_step_s": env_step, "env_expert_critic_s": inside, "env_overhead": (env_step - inside) / inside,
    }
    n = args.batch
    print(f"tiny SD pipeline, {args.size}x{args.size}, {args.steps} steps, CPU, {args.threads} torch thread(s), "
          f"best of {args.repeats}")
    print(f"  {n} sequential calls : {seq * 1e3:8.1f} ms  ({n / seq:6.1f} images/s)")
    print(f"  1 batch of {n}       : {bat * 1e3:8.1f} ms  ({n / bat:6.1f} images/s)  -> {seq / bat:.1f}x (goal >= 2x)")
    print(f"  compute one image   : {miss * 1e3:8.2f} ms")
    print(f"  cache hit           : {hit * 1e3:8.3f} ms  -> {miss / hit:.0f}x (goal >= 100x)")
    print(f"  bare pipeline call  : {raw * 1e3:8.2f} ms")
    print(f"  expert call         : {wrapped * 1e3:8.2f} ms  -> wrapper overhead {(wrapped - raw) * 1e3:+.2f} ms "
          f"({(wrapped - raw) / raw:+.1%})")
    print(f"  env step (ImagePoserDiffusers-v0, tiny CLIP critic): {env_step * 1e3:8.2f} ms, of which expert + "
          f"critic {inside * 1e3:.2f} ms -> env overhead {(env_step - inside) / inside:+.1%} (goal <= 10%)")
    return res


def _env_overhead(registry: Path, root: Path, steps: int = 12) -> tuple[float, float]:
    """Mean env step time and mean expert + critic time inside it, over ``steps`` steps (seconds)."""
    import gymnasium as gym

    import poser_env  # noqa: F401
    from critic.testing import save_tiny_clip

    clip = save_tiny_clip(root / "clip")
    env = gym.make("poser_env/ImagePoserDiffusers-v0", registry=str(registry), experts=["tiny-t2i"],
                   critic=f"clip:{clip}", local_files_only=True, text_encoder="hashing", max_steps=steps + 1,
                   prompt_source=["a red cup left of a blue dog"])
    env.reset(seed=0)
    if any(env.step(0)[2:4]):  # warm up (stepping after the end raises: start a new episode if it ended)
        env.reset(seed=1)
    total = inside = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(0)
        total += time.perf_counter() - t0
        t = env.unwrapped.last_timings
        inside += t["expert"] + t["critic"]
        if term or trunc:
            env.reset(seed=1)
    return total / steps, inside / steps



if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
