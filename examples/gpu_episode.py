"""Run one episode with real diffusion models from the registry file, on a GPU (not run in CI).

Two modes:

- ``--mode env`` (default): ``gym.make("poser_env/ImagePoserDiffusers-v0", ...)`` with the chosen registry
  entries and a CLIP (or VLM) critic, driven by a simple scripted policy (first the text-to-image expert,
  then the first allowed editing expert for each command, STOP when the plan is done);
- ``--mode direct``: the expert API alone (no critic, no env): generate, then run each edit command of
  ``--commands`` with the first expert that supports its op. Useful to check models and VRAM.

Each step prints the expert, its time and the residency report (bytes per pipeline, CUDA allocator
statistics); images go to ``--out-dir``. Fetch models beforehand (``hf download <id>``) and pass
``--local-files-only`` (or set ``HF_HUB_OFFLINE=1``) on machines without network.

VRAM per registry entry (estimated peak for one image at the recommended settings, resident, weights in
the listed CUDA dtype; the mode recommended on a 24 GB GPU - resident, model-offload or nf4 (bitsandbytes
4-bit transformer + model offload); H100-class GPU seconds per image, also estimates; the registry cards
hold the offload/sequential/nf4 VRAM and the 48/80 GB profiles):

=================  ==========================================  ========  =============  ========  =========
entry              model                                       dtype     24 GB profile  VRAM GB   GPU s/img
=================  ==========================================  ========  =============  ========  =========
sd15               stable-diffusion-v1-5/stable-diffusion-v1.  float16   resident       3.5       0.8
sd15-img2img       (shares sd15's weights)                     float16   resident       +0        0.5
sd15-inpaint       stable-diffusion-v1-5/stable-diffusion-in.  float16   resident       3.5       0.8
sd-turbo           stabilityai/sd-turbo                        float16   resident       3         0.05
sdxl-turbo         stabilityai/sdxl-turbo                      float16   resident       8         0.1
sdxl               stabilityai/stable-diffusion-xl-base-1.0    float16   resident       10        3
sdxl-img2img       (shares sdxl's weights)                     float16   resident       +0        1.8
sdxl-refiner       stabilityai/stable-diffusion-xl-refiner-1.  float16   resident       9         1
sdxl-inpaint       diffusers/stable-diffusion-xl-1.0-inpaint.  float16   resident       10        3
sd3-medium         stabilityai/stable-diffusion-3-medium-dif.  float16   resident       18        3.5
sd35-medium        stabilityai/stable-diffusion-3.5-medium     bfloat16  resident       20        4.5
sd35-large         stabilityai/stable-diffusion-3.5-large      bfloat16  model-offload  32        9
sd35-large-turbo   stabilityai/stable-diffusion-3.5-large-tu.  bfloat16  model-offload  32        1.3
flux-schnell       black-forest-labs/FLUX.1-schnell            bfloat16  nf4            34        1.5
flux-dev           black-forest-labs/FLUX.1-dev                bfloat16  nf4            35        10
flux-fill          black-forest-labs/FLUX.1-Fill-dev           bfloat16  nf4            36        11
flux-kontext       black-forest-labs/FLUX.1-Kontext-dev        bfloat16  nf4            38        20
qwen-image         Qwen/Qwen-Image                             bfloat16  nf4            60        40
qwen-image-edit    Qwen/Qwen-Image-Edit                        bfloat16  nf4            62        60
pixart-sigma       PixArt-alpha/PixArt-Sigma-XL-2-1024-MS      float16   resident       12        2.5
sana               Efficient-Large-Model/Sana_1600M_1024px_B.  bfloat16  resident       12        1.5
kandinsky3         kandinsky-community/kandinsky-3             float16   model-offload  26        6
kandinsky3-img2img (shares kandinsky3's weights)               float16   model-offload  +0        3.8
instruct-pix2pix   timbrooks/instruct-pix2pix                  float16   resident       4         0.7
gligen-insert      masterful/gligen-1-4-inpainting-text-box    float16   resident       4.5       2
=================  ==========================================  ========  =============  ========  =========

The default set (sdxl-turbo + instruct-pix2pix + sd15-inpaint + sdxl-refiner) needs about 25 GB with
everything resident; ``--budget-gb 12`` keeps it under 12 GB of weights by evicting the least recently used
pipeline to the CPU. ``--cpu-offload`` runs every model with ``enable_model_cpu_offload`` (peak roughly the
largest component, e.g. ~24 GB for FLUX's transformer in bf16, at 1.5-3x the time).

Run:  python examples/gpu_episode.py --prompt "two red clocks left of a blue dog" --out-dir runs/gpu_episode
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Args:
    prompt: str = "two red clocks left of a blue dog on a wooden table"
    experts: tuple[str, ...] = ("sdxl-turbo", "instruct-pix2pix", "sd15-inpaint", "sdxl-refiner")
    commands: tuple[str, ...] = field(default=("recolor: make the second clock green", "refine: improve the details"))
    registry: str | None = None  # registry TOML (default: experts/diffusers/registry.toml)
    mode: Literal["env", "direct"] = "env"
    critic: str = "clip:openai/clip-vit-base-patch32"
    device: str = "cuda"
    dtype: str | None = None  # None: each entry's recommended dtype
    budget_gb: float = 0.0  # weights kept on the GPU, GB (0: unlimited)
    cpu_offload: bool = False
    local_files_only: bool = False
    cache_dir: str | None = None
    seed: int = 0
    max_steps: int = 8
    out_dir: str = "runs/gpu_episode"


def _report(expert: Any) -> str:
    rep = expert.memory_report()
    parts = [f"{k}: {v / 2**30:.2f} GiB" for k, v in rep.per_pipeline().items()]
    cuda = rep.cuda or {}
    alloc = f"; cuda allocated {cuda.get('allocated', 0) / 2**30:.2f} GiB, peak {cuda.get('max_allocated', 0) / 2**30:.2f}"
    return f"on device {rep.device_bytes / 2**30:.2f} GiB [{'; '.join(parts)}]" + (alloc if cuda else "")


def run_direct(args: Args) -> None:
    from PIL import Image

    from experts.diffusers import load_diffusers_experts

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = int(args.budget_gb * 2**30) if args.budget_gb > 0 else None
    experts = load_diffusers_experts(
        args.registry, list(args.experts), device=args.device, dtype=args.dtype,
        local_files_only=args.local_files_only, memory_budget_bytes=budget,
        cpu_offload=args.cpu_offload or None, cache_dir=args.cache_dir,
    )
    t2i = next(e for e in experts if e.kind == "text-to-image")
    image = None
    for step, command in enumerate([f"generate: {args.prompt}", *args.commands]):
        op = command.split(":", 1)[0]
        expert = t2i if op == "generate" else next((e for e in experts if e.kind == "image-to-image"
                                                     and e.supports(op)), None)
        if expert is None:
            print(f"[{step}] no expert supports {op!r}; skipped")
            continue
        t0 = time.perf_counter()
        res = expert(command, image, seed=args.seed + step)
        image = res.image
        path = out / f"step{step:02d}_{expert.name}.png"
        Image.fromarray(image).save(path)
        print(f"[{step}] {expert.name:16s} {time.perf_counter() - t0:6.2f} s  {command!r} -> {path}")
        print(f"      {_report(expert)}")


def run_env(args: Args) -> None:
    import gymnasium as gym
    import numpy as np
    from PIL import Image

    import poser_env  # noqa: F401  (registers the env ids)
    from poser_env.env import unwrap

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    expert_kwargs: dict[str, object] = {"cache_dir": args.cache_dir}
    if args.budget_gb > 0:
        expert_kwargs["memory_budget_bytes"] = int(args.budget_gb * 2**30)
    if args.cpu_offload:
        expert_kwargs["cpu_offload"] = True
    env = gym.make(
        "poser_env/ImagePoserDiffusers-v0", registry=args.registry, experts=list(args.experts), critic=args.critic,
        device=args.device, dtype=args.dtype, local_files_only=args.local_files_only, expert_kwargs=expert_kwargs,
        max_steps=args.max_steps, prompt_source=[args.prompt],
    )
    _obs, info = env.reset(seed=args.seed, options={"prompt": args.prompt})
    base = unwrap(env)
    names = list(base.expert_names)
    stop = len(names)
    print(f"prompt: {args.prompt!r}\nexperts: {names}")
    for step in range(args.max_steps):
        mask = np.asarray(base.action_masks(), dtype=bool)
        allowed = [a for a in range(stop) if mask[a]]
        t2i = [a for a in allowed if base.experts[a].kind == "text-to-image"]
        edit = [a for a in allowed if base.experts[a].kind == "image-to-image"]
        action = (t2i or allowed or [stop])[0] if step == 0 else (edit or [stop])[0]
        t0 = time.perf_counter()
        _obs, reward, terminated, truncated, info = env.step(action)
        took = time.perf_counter() - t0
        name = names[action] if action < stop else "STOP"
        print(f"[{step}] {name:16s} {took:6.2f} s  reward {reward:+.3f}  {info.get('command', '')!r}")
        if info.get("feedback"):
            print(f"      critic: {info['feedback']}")
        for key in ("error", "critic_error"):
            if info.get(key):
                print(f"      {key}: {info[key]}")
        canvas = base.canvas
        if canvas is not None:
            Image.fromarray(canvas).save(out / f"step{step:02d}_{name}.png")
        if action < stop:
            print(f"      {_report(base.experts[action])}")
        if terminated or truncated:
            break
    (out / "last_info.json").write_text(json.dumps({k: str(v) for k, v in info.items()}, indent=1))
    env.close()


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line's :class:`Args` (``argv`` defaults to ``sys.argv[1:]``)."""
    return tyro.cli(Args, args=argv, description=__doc__)


if __name__ == "__main__":
    args = parse_args()
    run_env(args) if args.mode == "env" else run_direct(args)
