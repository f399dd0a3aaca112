"""GPU check (not a test): the diffusers experts, residency, batching, critics, LLM decomposer and the
``ImagePoserDiffusers-v0`` env on a CUDA device, with tiny random models built in code (no downloads).

Every model is built in code (experts/testing.py, critic/testing.py), saved to a temporary folder
and loaded back through the real ``from_pretrained`` path (diffusers pipelines through a registry TOML),
then run on ``--device``. Checks (each isolated: one failing does not stop the others):

- ``experts``: every tiny expert kind (text-to-image, image-to-image via ``from_pipe``, instruct-pix2pix,
  inpaint) in each of ``--dtypes``: HxWx3 uint8 output, and every ``nn.Module`` of the pipeline on the
  device in that dtype;
- ``determinism``: same command + seed twice (and after a reload from disk) -> byte-identical image
  (max abs difference reported otherwise); on an accelerator also CPU vs device with CPU generators (info);
- ``residency``: a byte budget that forces LRU eviction (to the CPU, then ``release``), with
  ``torch.cuda.memory_allocated`` at every step, and images unchanged after a pipeline comes back;
- ``batching``: ``--batch`` requests batched vs sequential (best of ``--repeats``, synchronised) on a larger
  tiny UNet (``--bench-channels``, ``--bench-size``), batched vs unbatched pixels, and :class:`BatchedExpert`
  from threads;
- ``env``: full ``ImagePoserDiffusers-v0`` episodes on the device with the tiny CLIP and the tiny Llava
  critic and the detector judge (same seed twice -> same images), then the conformance suite
  (Gymnasium's and SB3's ``check_env``, determinism, pickle, render, masks);
- ``llm``: the LLM decomposer on a tiny Llama (loading, greedy determinism, scripted JSON end to end);
- ``critics``: VLM (Llava, Idefics3, PaliGemma), CLIP critic and detector judge in each dtype, against a
  float32 CPU reference.

Prints a table, writes a JSON of results to ``--out`` (default ``$OUT/gpu_check.json`` when ``OUT`` is set,
else ``runs/gpu_check.json``; rewritten after each check) and exits 1 if any check failed (2 when
``--device cuda`` is asked but CUDA is not available: it never falls back to the CPU silently).

Run:  PYTHONPATH=. python examples/benchmarks/gpu_check.py [--device cuda] [--out runs/gpu_check.json]
      PYTHONPATH=. python examples/benchmarks/gpu_check.py --device cpu --bench-size 64 --repeats 1   (dry run)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tyro

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ENV_ID = "poser_env/ImagePoserDiffusers-v0"
ALL_CHECKS = ("experts", "determinism", "residency", "batching", "env", "llm", "critics")
PROMPTS = ["a red cup left of a blue dog", "two green apples"]
#: One command per tiny registry entry (experts/testing.py: write_tiny_registry). The pipeline classes of registry
#: v2 (SDXL, SD3, FLUX, Fill, Kontext, PixArt, SANA, Qwen-Image, GLIGEN) are checked on a GPU by tests/test_gpu.py.
COMMANDS = {
    "tiny-t2i": "generate: a red cup left of a blue dog",
    "tiny-img2img": "refine: a sharper red cup",
    "tiny-ip2p": "recolor: make the cup blue",
    "tiny-inpaint": "add: a blue dog",
}


@dataclass(frozen=True)
class Args:
    device: str = "cuda"  # torch device; "cpu" for a dry run (no silent fallback)
    out: str = ""  # JSON results; "" = $OUT/gpu_check.json if OUT is set, else runs/gpu_check.json
    checks: str = ",".join(ALL_CHECKS)  # comma-separated subset of the checks
    dtypes: str = "float32,float16,bfloat16"  # dtypes of the experts/critics/LLM checks
    size: int = 32  # image side of the tiny experts (multiple of 8)
    steps: int = 2  # denoising steps of the tiny experts
    bench_size: int = 128  # image side in the batching/residency checks
    bench_steps: int = 4  # denoising steps in the batching/residency checks (>= 2: img2img runs int(steps * 0.75))
    bench_channels: str = "64,128"  # UNet block widths of the batching/residency pipelines
    batch: int = 8  # requests in the batching check
    repeats: int = 3  # timings per measurement (best kept)
    conformance_steps: int = 10  # random steps of the conformance determinism check
    threads: int = 0  # torch intra-op threads (0: torch's default)
    keep: bool = False  # keep the temporary model folder (its path is printed)


@dataclass
class Result:
    """Outcome of one check."""

    name: str
    ok: bool = True
    seconds: float = 0.0
    summary: str = ""
    rows: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # traceback tails

    def fail(self, msg: str) -> None:
        self.ok = False
        self.failures.append(msg)

    def expect(self, cond: bool, msg: str) -> bool:
        if not cond:
            self.fail(msg)
        return bool(cond)

    def sub(self, label: str, fn: Callable[[], Any]) -> Any:
        """Run one part of a check; an exception fails the check but not the others' parts."""
        try:
            return fn()
        except Exception as exc:
            self.fail(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
            self.errors.append(f"[{label}]\n" + tail(traceback.format_exc()))
            return None


def tail(text: str, n: int = 25) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def allocated(device: str) -> int | None:
    """``torch.cuda.memory_allocated`` (after a synchronize) or None off CUDA."""
    import torch

    if not device.startswith("cuda"):
        return None
    sync(device)
    return int(torch.cuda.memory_allocated(torch.device(device)))


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.2f}MiB"


def best_of(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs, synchronised before and after, in seconds."""
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def diff(a: Any, b: Any) -> dict[str, Any]:
    """Byte identity, max abs difference and fraction of differing values of two uint8 images."""
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return {"identical": False, "max_abs": None, "frac_diff": None, "shapes": [list(x.shape), list(y.shape)]}
    d = np.abs(x.astype(np.int16) - y.astype(np.int16))
    return {"identical": bool(x.tobytes() == y.tobytes()), "max_abs": int(d.max()), "frac_diff": float((d > 0).mean())}


def module_placement(obj: Any) -> dict[str, tuple[str, str]]:
    """``component -> (device, dtype)`` of the first parameter of each ``nn.Module`` of a pipeline or model."""
    import torch

    comps = getattr(obj, "components", None)
    items = comps.items() if isinstance(comps, dict) else [("model", obj)]
    out: dict[str, tuple[str, str]] = {}
    for name, comp in items:
        if isinstance(comp, torch.nn.Module):
            p = next(iter(comp.parameters()), None)
            if p is not None:
                out[name] = (str(p.device), str(p.dtype).replace("torch.", ""))
    return out


def placement_ok(res: Result, label: str, obj: Any, device: str, dtype: str | None) -> dict[str, tuple[str, str]]:
    """Fail ``res`` unless every module sits on ``device`` (type and index) in ``dtype`` (None: any)."""
    import torch

    want = torch.device(device)
    place = module_placement(obj)
    res.expect(bool(place), f"{label}: no torch modules found")
    for comp, (dev, dt) in place.items():
        got = torch.device(dev)
        on = got.type == want.type and (want.index is None or got.index == want.index)
        res.expect(on, f"{label}: {comp} is on {dev}, expected {device}")
        if dtype is not None:
            res.expect(dt == dtype, f"{label}: {comp} is {dt}, expected {dtype}")
    return place


def image_ok(res: Result, label: str, img: Any, shape: tuple[int, ...]) -> None:
    import numpy as np

    arr = np.asarray(img)
    res.expect(arr.shape == shape, f"{label}: image shape {arr.shape}, expected {shape}")
    res.expect(arr.dtype == np.uint8, f"{label}: image dtype {arr.dtype}, expected uint8")
    res.expect(bool(arr.flags.c_contiguous), f"{label}: image is not C-contiguous")


# ---------------------------------------------------------------------------------------------- models
class World:
    """Tiny models saved under one temporary folder, built on first use."""

    def __init__(self, root: Path, args: Args) -> None:
        self.root = root
        self.args = args
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def registry(self) -> str:
        """Registry of the tiny pipelines (entries tiny-t2i, tiny-img2img, tiny-ip2p, tiny-inpaint)."""

        def build() -> str:
            from experts.testing import save_tiny_pipelines, write_tiny_registry

            folders = save_tiny_pipelines(self.root / "pipes")
            return str(write_tiny_registry(self.root / "registry.toml", folders, size=self.args.size,
                                           steps=self.args.steps))

        return str(self._get("registry", build))

    @property
    def big_registry(self) -> str:
        """The same entries with wider UNets, at ``bench_size`` and ``bench_steps``."""

        def build() -> str:
            from experts.testing import save_tiny_pipelines, write_tiny_registry

            a, b = (int(x) for x in self.args.bench_channels.split(","))
            folders = save_tiny_pipelines(self.root / "big", unet_channels=(a, b))
            return str(write_tiny_registry(self.root / "big_registry.toml", folders, size=self.args.bench_size,
                                           steps=self.args.bench_steps))

        return str(self._get("big_registry", build))

    def model(self, kind: str) -> str:
        """Folder of a tiny transformers model: clip, llava, idefics3, paligemma, llama or owlv2."""
        import critic.testing as tiny_models

        fn = getattr(tiny_models, f"save_tiny_{kind}")
        return str(self._get(kind, lambda: fn(self.root / kind)))


def load_experts(registry: str, names: list[str] | None, device: str, dtype: str, **kw: Any) -> dict[str, Any]:
    from experts.diffusers import load_diffusers_experts

    exps = load_diffusers_experts(registry, names, device=device, dtype=dtype, local_files_only=True, **kw)
    return {e.name: e for e in exps}


def release_all(experts: dict[str, Any]) -> None:
    import gc

    managers = {id(e.manager): e.manager for e in experts.values()}
    for m in managers.values():
        m.evict_all(release=True)
    gc.collect()


def dtypes(args: Args) -> list[str]:
    return [d.strip() for d in args.dtypes.split(",") if d.strip()]


# ---------------------------------------------------------------------------------------------- checks
def check_experts(w: World, args: Args, res: Result) -> None:
    """Every expert kind in every dtype: output format and where the pipeline sits."""
    shape = (args.size, args.size, 3)
    table: list[dict[str, Any]] = []
    for dt in dtypes(args):
        exps: dict[str, Any] = {}

        def run(dt: str = dt) -> None:
            exps.update(load_experts(w.registry, None, args.device, dt))
            base = None
            for name, cmd in COMMANDS.items():
                e = exps[name]
                t0 = time.perf_counter()
                out = e(cmd, base, seed=2)
                sync(args.device)
                ms = (time.perf_counter() - t0) * 1e3
                label = f"{name}/{dt}"
                image_ok(res, label, out.image, shape)
                pipe = e.load()
                place = placement_ok(res, label, pipe, args.device, dt)
                res.expect(out.metadata.get("device") == args.device, f"{label}: metadata device {out.metadata.get('device')}")
                if name == "tiny-t2i":
                    base = out.image
                modules = sorted({f"{d}/{t}" for d, t in place.values()})
                mean, std = round(float(out.image.mean()), 2), round(float(out.image.std()), 2)
                table.append({"expert": name, "dtype": dt, "pipeline": type(pipe).__name__,
                              "shape": list(out.image.shape), "mean": mean, "std": std, "ms_first_call": round(ms, 1),
                              "modules": modules})
                res.rows.append(f"{name:13s} {dt:9s} {type(pipe).__name__:40s} {out.image.shape} mean {mean:6.1f} "
                                f"std {std:5.1f} {ms:7.1f} ms  {','.join(modules)}")

        res.sub(f"experts {dt}", run)
        res.sub(f"release {dt}", functools.partial(release_all, exps))
    res.details["table"] = table
    res.summary = f"{len(table)} expert x dtype calls"


def check_determinism(w: World, args: Args, res: Result) -> None:
    """Same command and seed -> the same bytes, within a process and after reloading from disk."""
    import numpy as np

    cmd = COMMANDS["tiny-t2i"]
    out: dict[str, Any] = {}
    for dt in dtypes(args):

        def run(dt: str = dt) -> None:
            exps = load_experts(w.registry, ["tiny-t2i", "tiny-ip2p"], args.device, dt)
            t2i, ip2p = exps["tiny-t2i"], exps["tiny-ip2p"]
            a = t2i(cmd, seed=7).image
            b = t2i(cmd, seed=7).image
            c = t2i(cmd, seed=8).image
            e1 = ip2p(COMMANDS["tiny-ip2p"], a, seed=3).image
            e2 = ip2p(COMMANDS["tiny-ip2p"], a, seed=3).image
            release_all(exps)
            fresh = load_experts(w.registry, ["tiny-t2i"], args.device, dt)
            r = fresh["tiny-t2i"](cmd, seed=7).image
            release_all(fresh)
            d = {"repeat": diff(a, b), "edit_repeat": diff(e1, e2), "reload": diff(a, r), "other_seed": diff(a, c)}
            out[dt] = d
            for k in ("repeat", "edit_repeat", "reload"):
                res.expect(d[k]["identical"], f"{dt}: {k} is not byte-identical (max abs diff {d[k]['max_abs']}, "
                                              f"{d[k]['frac_diff']:.4f} of values differ)")
            res.expect(not d["other_seed"]["identical"], f"{dt}: seeds 7 and 8 gave the same image")
            res.rows.append(f"{dt:9s} repeat {_same(d['repeat'])}  edit {_same(d['edit_repeat'])}  reload "
                            f"{_same(d['reload'])}  other seed differs: {not d['other_seed']['identical']}")

        res.sub(f"determinism {dt}", run)

    if not args.device.startswith("cpu"):

        def cross() -> None:
            # the same initial noise (CPU generators) on both devices: only the arithmetic differs
            imgs = {}
            for dev in ("cpu", args.device):
                exps = load_experts(w.registry, ["tiny-t2i"], dev, "float32", generator_device="cpu")
                imgs[dev] = exps["tiny-t2i"](cmd, seed=7).image
                release_all(exps)
            d = diff(imgs["cpu"], imgs[args.device])
            out["cpu_vs_device_float32"] = d
            mean_abs = float(np.abs(imgs["cpu"].astype(np.int16) - imgs[args.device].astype(np.int16)).mean())
            d["mean_abs"] = mean_abs
            res.rows.append(f"cpu vs {args.device} (float32, CPU generators; info): max abs {d['max_abs']}, mean abs "
                            f"{mean_abs:.3f}, {d['frac_diff']:.4f} of values differ")

        res.sub("cpu vs device", cross)
    res.details.update(out)
    res.summary = ", ".join(f"{k}: {'identical' if v['repeat']['identical'] else 'DIFFERS'}" for k, v in out.items()
                            if "repeat" in v)


def _same(d: dict[str, Any]) -> str:
    return "identical" if d["identical"] else f"DIFF(max {d['max_abs']}, {d['frac_diff']:.3%})"


def _locations(mgr: Any) -> dict[str, str]:
    return {f"{Path(b.model).name}[{'+'.join(b.tasks)}]": b.location for b in mgr.memory_report().bases}


def check_residency(w: World, args: Args, res: Result) -> None:
    """LRU eviction under a real byte budget: memory on the device and images after bringing pipelines back."""
    import gc

    import torch

    dev = args.device
    dt = "float16" if dev.startswith("cuda") else "float32"
    reg = w.big_registry
    size = (args.bench_size, args.bench_size, 3)
    before = allocated(dev)
    # bytes of each base, measured with an unlimited manager; one call each so that anything allocated once per
    # process (cuBLAS workspaces, kernels) exists before the baseline is taken
    probe = load_experts(reg, ["tiny-t2i", "tiny-ip2p", "tiny-inpaint"], dev, dt)
    for e in probe.values():
        e.load()
    per = probe["tiny-t2i"].manager.memory_report().per_pipeline()
    loaded_alloc = allocated(dev)
    img = probe["tiny-t2i"](COMMANDS["tiny-t2i"], seed=1).image
    for name in ("tiny-ip2p", "tiny-inpaint"):
        probe[name](COMMANDS[name], img, seed=1)
    release_all(probe)
    del probe
    gc.collect()
    base0 = allocated(dev)
    biggest = max(per.values())
    res.details.update(dtype=dt, base_bytes=per, allocated_before_probe=before, baseline_allocated=base0,
                       allocated_all_three_loaded=loaded_alloc)
    res.rows.append(f"dtype {dt}; bases: " + ", ".join(f"{Path(k.split(' ')[0]).name} {mib(v)}" for k, v in per.items())
                    + f"; allocated with all three on the device: {mib(None if loaded_alloc is None or before is None else loaded_alloc - before)}")
    steps: list[dict[str, Any]] = []
    slack = int(0.05 * biggest) + (2 << 20)

    def record(tag: str, mgr: Any, a0: int | None) -> None:
        rep = mgr.memory_report()
        now = allocated(dev)
        row = {"step": tag, "device_bytes": rep.device_bytes, "offloaded_bytes": rep.offloaded_bytes,
               "allocated_over_baseline": None if now is None or a0 is None else now - a0,
               "locations": _locations(mgr), "counters": dict(rep.counters)}
        steps.append(row)
        res.expect(rep.budget_bytes is None or rep.device_bytes <= rep.budget_bytes,
                   f"{tag}: device_bytes {rep.device_bytes} > budget {rep.budget_bytes}")
        if row["allocated_over_baseline"] is not None:
            gap = row["allocated_over_baseline"] - rep.device_bytes
            row["allocated_minus_counted"] = gap
            res.expect(abs(gap) <= slack, f"{tag}: allocated over baseline {mib(row['allocated_over_baseline'])} but the "
                                          f"manager counts {mib(rep.device_bytes)} on the device")
        locs = " ".join(f"{k}={v}" for k, v in row["locations"].items())
        res.rows.append(f"  {tag:28s} counted {mib(rep.device_bytes):>10s} alloc+{mib(row['allocated_over_baseline']):>10s}"
                        f"  {locs}")

    # --- evict to the CPU: room for two bases
    def to_cpu() -> None:
        budget = int(2.5 * biggest)
        exps = load_experts(reg, ["tiny-t2i", "tiny-ip2p", "tiny-inpaint", "tiny-img2img"], dev, dt,
                            memory_budget_bytes=budget, evict_to="cpu")
        mgr = exps["tiny-t2i"].manager
        a0 = allocated(dev)
        res.rows.append(f"evict_to=cpu, budget {mib(budget)}")
        ref = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=11).image
        image_ok(res, "residency t2i", ref, size)
        record("t2i", mgr, a0)
        ed = exps["tiny-ip2p"](COMMANDS["tiny-ip2p"], ref, seed=12).image
        record("ip2p", mgr, a0)
        exps["tiny-inpaint"](COMMANDS["tiny-inpaint"], ref, seed=13)
        record("inpaint (evicts t2i)", mgr, a0)
        locs = _locations(mgr)
        res.expect(any(k.startswith("text-to-image") and v == "offloaded" for k, v in locs.items()),
                   f"after inpaint the LRU base (text-to-image) should be offloaded: {locs}")
        exps["tiny-img2img"](COMMANDS["tiny-img2img"], ref, seed=14)
        record("img2img (t2i back, ip2p out)", mgr, a0)
        placement_ok(res, "img2img after coming back", exps["tiny-img2img"].load(), dev, dt)
        again = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=11).image
        ed2 = exps["tiny-ip2p"](COMMANDS["tiny-ip2p"], ref, seed=12).image
        record("ip2p back (evicts inpaint)", mgr, a0)
        d1, d2 = diff(ref, again), diff(ed, ed2)
        res.details["cpu_round_trip"] = {"t2i": d1, "ip2p": d2, "counters": dict(mgr.counters)}
        res.expect(d1["identical"], f"t2i image changed after a round trip to the CPU: {d1}")
        res.expect(d2["identical"], f"ip2p image changed after a round trip to the CPU: {d2}")
        res.expect(mgr.counters["loads"] == 3 and mgr.counters["derived"] == 1,
                   f"expected 3 loads from disk and 1 from_pipe: {mgr.counters}")
        res.expect(mgr.counters["evictions"] >= 2, f"expected >= 2 evictions: {mgr.counters}")
        res.rows.append(f"  images after the round trip: t2i {_same(d1)}, ip2p {_same(d2)}; counters {dict(mgr.counters)}")
        release_all(exps)

    # --- release: room for one base
    def release() -> None:
        budget = int(1.5 * biggest)
        exps = load_experts(reg, ["tiny-t2i", "tiny-ip2p"], dev, dt, memory_budget_bytes=budget, evict_to="release")
        mgr = exps["tiny-t2i"].manager
        a0 = allocated(dev)
        res.rows.append(f"evict_to=release, budget {mib(budget)}")
        ref = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=21).image
        record("t2i", mgr, a0)
        exps["tiny-ip2p"](COMMANDS["tiny-ip2p"], ref, seed=22)
        record("ip2p (releases t2i)", mgr, a0)
        again = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=21).image
        record("t2i (reloaded from disk)", mgr, a0)
        d = diff(ref, again)
        res.details["release_reload"] = {"t2i": d, "counters": dict(mgr.counters)}
        res.expect(d["identical"], f"t2i image changed after release + reload: {d}")
        res.expect(mgr.counters["releases"] >= 2 and mgr.counters["loads"] == 3,
                   f"expected >= 2 releases and 3 loads: {mgr.counters}")
        res.rows.append(f"  image after reload: {_same(d)}; counters {dict(mgr.counters)}")
        release_all(exps)

    res.sub("evict to cpu", to_cpu)
    res.sub("release", release)
    gc.collect()
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    end = allocated(dev)
    res.details["steps"] = steps
    res.details["final_allocated"] = end
    if end is not None and base0 is not None:
        leak = end - base0
        res.details["leak_bytes"] = leak
        res.rows.append(f"after releasing everything: allocated {mib(end)} (baseline {mib(base0)}, {leak:+d} bytes), "
                        f"reserved {mib(int(torch.cuda.memory_reserved(torch.device(dev))))}")
        res.expect(leak <= slack, f"{mib(leak)} still allocated after releasing every pipeline")

    # --- enable_model_cpu_offload (accelerate hooks; CUDA only, ignored on the CPU), with a from_pipe derivation
    def offload() -> None:
        exps = load_experts(reg, ["tiny-t2i", "tiny-img2img"], dev, dt, cpu_offload=True)
        mgr = exps["tiny-t2i"].manager
        a0 = allocated(dev)
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(torch.device(dev))
        ref = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=31).image
        edit = exps["tiny-img2img"](COMMANDS["tiny-img2img"], ref, seed=32).image
        again = exps["tiny-t2i"](COMMANDS["tiny-t2i"], seed=31).image
        image_ok(res, "cpu_offload t2i", ref, size)
        image_ok(res, "cpu_offload img2img", edit, size)
        d = diff(ref, again)
        rep = mgr.memory_report()
        after = allocated(dev)
        peak = int(torch.cuda.max_memory_allocated(torch.device(dev))) if dev.startswith("cuda") else None
        res.details["cpu_offload"] = {"t2i_repeat": d, "locations": _locations(mgr), "counted": rep.device_bytes,
                                      "allocated_after_over_baseline": None if after is None or a0 is None else after - a0,
                                      "peak_allocated": peak}
        res.expect(d["identical"], f"cpu_offload: t2i image changed after img2img ran on the shared weights: {d}")
        if dev.startswith("cuda"):
            res.expect(all(v == "cpu-offload" for v in _locations(mgr).values()), f"cpu_offload: {_locations(mgr)}")
        res.rows.append(f"cpu_offload=True: t2i + img2img (from_pipe) ok, t2i again {_same(d)}, locations "
                        f"{_locations(mgr)}, counted {mib(rep.device_bytes)}, allocated after the calls "
                        f"+{mib(res.details['cpu_offload']['allocated_after_over_baseline'])}, peak {mib(peak)}")
        release_all(exps)

    res.sub("cpu_offload", offload)
    res.summary = f"{len(steps)} steps, budgets forced eviction; " + (
        f"leak {res.details.get('leak_bytes', 0):+d} B" if end is not None else "no CUDA memory stats on CPU")


def check_batching(w: World, args: Args, res: Result) -> None:
    """Batched vs sequential throughput, batched vs unbatched pixels, and BatchedExpert from threads."""
    from concurrent.futures import ThreadPoolExecutor

    from experts.diffusers import BatchedExpert, batch_call
    from poser_env.core.expert import ExpertOutput

    dev = args.device
    dt = "float16" if dev.startswith("cuda") else "float32"
    n = args.batch
    exps = load_experts(w.big_registry, ["tiny-t2i"], dev, dt, max_batch=n)
    e = exps["tiny-t2i"]
    reqs = [(f"generate: a red cup number {i}", None, 100 + i) for i in range(n)]
    e(reqs[0][0], seed=reqs[0][2])  # load + warm up both paths
    batch_call(e, reqs)
    pipe = e.load()
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    seq_out: list[Any] = []
    bat_out: list[Any] = []

    def sequential() -> None:
        seq_out[:] = [e(c, i, seed=s).image for c, i, s in reqs]

    def batched() -> None:
        bat_out[:] = [o.image for o in batch_call(e, reqs) if isinstance(o, ExpertOutput)]

    seq = best_of(sequential, args.repeats, dev)
    bat = best_of(batched, args.repeats, dev)
    diffs = [diff(a, b) for a, b in zip(seq_out, bat_out)]
    worst = max((d["max_abs"] or 0) for d in diffs)
    identical = sum(d["identical"] for d in diffs)
    res.details.update(dtype=dt, size=args.bench_size, steps=args.bench_steps, unet_params=n_params, batch=n,
                       sequential_s=seq, batched_s=bat, speedup=seq / bat, images_per_s_sequential=n / seq,
                       images_per_s_batched=n / bat, batched_vs_unbatched={"identical": identical, "worst_max_abs": worst,
                                                                           "per_image": diffs})
    for img in bat_out:
        image_ok(res, "batched", img, (args.bench_size, args.bench_size, 3))
    res.expect(len(bat_out) == n, f"batched call returned {len(bat_out)} images for {n} requests")
    res.rows.append(f"tiny SD, UNet {args.bench_channels} ({n_params / 1e6:.2f}M params), {args.bench_size}px, "
                    f"{args.bench_steps} steps, {dt}, best of {args.repeats}")
    res.rows.append(f"  {n} sequential calls: {seq * 1e3:8.1f} ms ({n / seq:7.1f} images/s)")
    res.rows.append(f"  1 batch of {n}      : {bat * 1e3:8.1f} ms ({n / bat:7.1f} images/s) -> {seq / bat:.2f}x")
    res.rows.append(f"  batched vs unbatched pixels: {identical}/{n} identical, worst max abs diff {worst} (info)")

    def threads() -> None:
        wrapped = BatchedExpert(e, max_batch=n, max_wait_s=0.05)
        try:
            with ThreadPoolExecutor(n) as pool:
                outs = list(pool.map(lambda r: wrapped(r[0], r[1], seed=r[2]).image, reqs))
        finally:
            wrapped.close()
        dd = [diff(a, b) for a, b in zip(outs, bat_out)]
        res.details["threads"] = {"batch_sizes": wrapped.batch_sizes,
                                  "identical_to_batched": sum(d["identical"] for d in dd)}
        res.expect(len(outs) == n, "BatchedExpert lost a result")
        res.rows.append(f"  BatchedExpert from {n} threads: batch sizes {wrapped.batch_sizes}, "
                        f"{sum(d['identical'] for d in dd)}/{n} identical to the batched call")

    res.sub("BatchedExpert threads", threads)
    release_all(exps)
    res.summary = f"{n} requests: batched/sequential throughput {seq / bat:.2f}x ({n / bat:.1f} vs {n / seq:.1f} img/s)"


def _episode(env: Any, seed: int) -> dict[str, Any]:
    import numpy as np

    obs, info = env.reset(seed=seed)
    u = env.unwrapped
    keys = set(info)
    rewards: list[float] = []
    canvases: list[bytes] = []
    experts: list[str] = []
    errors: list[str] = []
    t_exp = t_crit = 0.0
    done, steps = False, 0
    while not done:
        mask = u.action_masks()
        valid = np.flatnonzero(mask[:-1])
        # prefer the editing experts (last in the registry) so that they run inside the env too
        a = int(valid[-1 - steps % len(valid)]) if len(valid) else len(mask) - 1
        obs, r, term, trunc, info = env.step(a)
        keys |= set(info)
        rewards.append(float(r))
        experts.append(str(info.get("expert")))
        for k in ("error", "critic_error"):
            if k in info:
                errors.append(f"step {steps}: {k}: {info[k]}")
        canvases.append(b"" if u.canvas is None else u.canvas.tobytes())
        t_exp += u.last_timings["expert"]
        t_crit += u.last_timings["critic"]
        steps += 1
        done = term or trunc
    return {"steps": steps, "rewards": rewards, "experts": experts, "errors": errors, "info_keys": sorted(keys),
            "is_success": info.get("is_success"), "judge": info.get("judge"), "canvases": canvases,
            "canvas_shape": None if u.canvas is None else list(u.canvas.shape), "expert_s": t_exp, "critic_s": t_crit,
            "obs_keys": sorted(obs) if isinstance(obs, dict) else None}


def check_env(w: World, args: Args, res: Result) -> None:
    """Whole episodes on the device (CLIP and VLM critics, detector judge), then the conformance suite."""
    import gymnasium as gym

    import poser_env  # noqa: F401
    from poser_env.conformance import check_conformance

    dev = args.device
    dt = "float16" if dev.startswith("cuda") else "float32"
    # the random tiny critics return no boxes: let region experts repaint the canvas instead of refusing the edit
    base: dict[str, Any] = {"registry": w.registry, "local_files_only": True, "text_encoder": "hashing", "max_steps": 8,
            "prompt_source": PROMPTS, "device": dev, "dtype": dt, "expert_kwargs": {"default_mask": "full"}}
    res.details["dtype"] = dt
    for critic in ("clip", "llava"):

        def run(critic: str = critic) -> None:
            kind = "vlm" if critic == "llava" else "clip"
            kw = {**base, "critic": f"{kind}:{w.model(critic)}", "judge": f"detector:{w.model('owlv2')}"}
            env = gym.make(ENV_ID, **kw)
            t0 = time.perf_counter()
            ep1 = _episode(env, seed=0)
            sec = time.perf_counter() - t0
            u: Any = env.unwrapped
            placement_ok(res, f"env/{critic} critic", u.critic._model, dev, dt)
            placement_ok(res, f"env/{critic} judge", u.judge.judge._model, dev, None)
            placement_ok(res, f"env/{critic} expert", u.experts[0].load(), dev, dt)
            ep2 = _episode(env, seed=0)
            same = ep1["canvases"] == ep2["canvases"] and ep1["rewards"] == ep2["rewards"]
            n_same = sum(a == b for a, b in zip(ep1["canvases"], ep2["canvases"]))
            res.expect(not ep1["errors"], f"{critic}: errors in the episode: {ep1['errors'][:3]}")
            res.expect(ep1["canvas_shape"] == [args.size, args.size, 3], f"{critic}: canvas {ep1['canvas_shape']}")
            res.expect("is_success" in ep1["info_keys"], f"{critic}: no is_success at the episode end")
            res.expect(same, f"{critic}: two resets with seed=0 and the same actions differ "
                             f"({n_same}/{len(ep1['canvases'])} canvases identical, rewards {ep1['rewards']} vs {ep2['rewards']})")
            judge = ep1["judge"] or {}
            res.details[critic] = {k: v for k, v in ep1.items() if k != "canvases"} | {
                "seconds": sec, "repeat_identical": same, "judge_keys": sorted(judge)}
            res.rows.append(f"{critic:6s} {dt}: {ep1['steps']} steps in {sec:.2f}s (expert {ep1['expert_s']:.2f}s, critic "
                            f"{ep1['critic_s']:.2f}s), return {sum(ep1['rewards']):+.3f}, success {ep1['is_success']}, "
                            f"judge pass {judge.get('pass')}, same seed twice: {'identical' if same else 'DIFFERS'}")
            res.rows.append(f"       rewards {[round(r, 3) for r in ep1['rewards']]}, experts {ep1['experts']}")
            res.rows.append(f"       info keys {ep1['info_keys']}")
            env.close()

        res.sub(f"episode {critic}", run)

    def conformance() -> None:
        kw = {**base, "critic": f"clip:{w.model('clip')}", "judge": f"detector:{w.model('owlv2')}"}
        t0 = time.perf_counter()
        rep = check_conformance(ENV_ID, env_kwargs=kw, n_steps=args.conformance_steps)
        res.details["conformance"] = {"passed": rep.passed, "failures": rep.failures,
                                      "seconds": time.perf_counter() - t0}
        res.rows.append(f"conformance ({time.perf_counter() - t0:.1f}s): passed {rep.passed}")
        for name, msg in rep.failures:
            res.fail(f"conformance {name}: {msg[:300]}")

    res.sub("conformance", conformance)
    passed = len(res.details.get("conformance", {}).get("passed", []))
    res.summary = f"2 critics x 2 episodes, conformance {passed} passed"


def check_llm(w: World, args: Args, res: Result) -> None:
    """LLM decomposer on a tiny Llama: loading on the device, greedy determinism, scripted JSON end to end."""
    from critic.testing import scripted_output
    from poser_env.core.parser import parse
    from poser_env.core.spec import Entity, Spec
    from poser_env.llm import LLMDecomposer

    folder = w.model("llama")
    prompt = "two red clocks left of a blue dog"
    for dt in dtypes(args):

        def run(dt: str = dt) -> None:
            dec = LLMDecomposer(folder, device=args.device, dtype=dt, max_new_tokens=12)
            t0 = time.perf_counter()
            spec = dec.parse(prompt)
            sec = time.perf_counter() - t0
            placement_ok(res, f"llm/{dt}", dec._model, args.device, dt)
            raw = dec.last_output
            res.expect(spec.metadata.get("decomposer") == "rules-fallback" and spec == parse(prompt),
                       f"{dt}: a random LLM should fall back to the rules: {spec.metadata}")
            other = LLMDecomposer(folder, device=args.device, dtype=dt, max_new_tokens=12)
            again = other.generate(prompt)
            res.expect(again == raw, f"{dt}: greedy generation differs between two loads: {raw!r} vs {again!r}")
            # scripted logits: generate -> decode -> extract -> validate on the device
            answer = '{"include":[{"class":"clock","count":2,"color":"red"},{"class":"dog","count":1,"color":"blue"}]}'
            scripted = LLMDecomposer(folder, device=args.device, dtype=dt, max_new_tokens=64, cache_size=0).load()
            p2 = "two red clocks and a blue dog"
            with scripted_output(scripted, answer):
                s2 = scripted.parse(p2)
            want = Spec(entities=(Entity("clock", 2, "red"), Entity("dog", 1, "blue")), prompt=p2)
            res.expect(scripted.last_output == answer and s2 == want,
                       f"{dt}: scripted JSON did not round-trip: {scripted.last_output!r}")
            res.rows.append(f"{dt:9s} parse {sec * 1e3:7.1f} ms -> {spec.metadata.get('decomposer')}; greedy repeat "
                            f"{'identical' if again == raw else 'DIFFERS'}; scripted JSON -> "
                            f"{s2.metadata.get('decomposer')} {'ok' if s2 == want else 'WRONG'}")
            res.details[dt] = {"raw": raw, "repeat_identical": again == raw, "scripted_ok": s2 == want,
                               "parse_s": sec}

        res.sub(f"llm {dt}", run)
    res.summary = f"{len(dtypes(args))} dtypes"


def check_critics(w: World, args: Args, res: Result) -> None:
    """VLM, CLIP critic and detector judge in each dtype on the device vs a float32 CPU reference."""
    import numpy as np

    from critic.clip import CLIPCritic
    from critic.detector_judge import DetectorJudge
    from critic.vlm import VLMCritic
    from poser_env.core.spec import Entity, Exclusion, Relation, Spec

    spec = Spec(entities=(Entity("dog", 1, "red"), Entity("teddy bear", 2)), relations=(Relation(0, "right of", 1),),
                exclusions=(Exclusion("cat"),), background="sky",
                prompt="a red dog right of two teddy bears, no cat, sky background")
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)

    def vlm(kind: str) -> Callable[..., Any]:
        extra: dict[str, Any] = {"prompt_template": "<image>answer en {question}"} if kind == "paligemma" else {}
        return lambda **kw: VLMCritic(w.model(kind), min_yes_no_mass=0.0, **extra, **kw)

    makers: dict[str, Callable[..., Any]] = {
        "vlm/llava": vlm("llava"), "vlm/idefics3": vlm("idefics3"), "vlm/paligemma": vlm("paligemma"),
        "clip": lambda **kw: CLIPCritic(w.model("clip"), **kw),
        "detector+clip": lambda **kw: DetectorJudge(w.model("owlv2"), clip_model=w.model("clip"), **kw),
    }
    for name, make in makers.items():

        def run(name: str = name, make: Callable[..., Any] = make) -> None:
            ref = make(device="cpu", dtype="float32")(image, spec)
            rc = np.array([v.confidence for v in ref.verdicts])
            for dt in dtypes(args):
                c = make(device=args.device, dtype=dt)
                t0 = time.perf_counter()
                fb = c(image, spec)
                sec = time.perf_counter() - t0
                placement_ok(res, f"{name}/{dt}", c._model, args.device, dt)
                conf = np.array([v.confidence for v in fb.verdicts])
                res.expect(bool(np.isfinite(conf).all()) and np.isfinite(fb.alignment), f"{name}/{dt}: non-finite scores")
                unknown = sum(v.holds == "unknown" for v in fb.verdicts)
                dmax = float(np.abs(conf - rc).max()) if conf.shape == rc.shape and conf.size else 0.0
                same = [v.holds for v in fb.verdicts] == [v.holds for v in ref.verdicts]
                extra = ""
                if name.startswith("detector"):
                    extra = f", {len(fb.detections)} boxes (cpu {len(ref.detections)})"
                    placement_ok(res, f"{name}/{dt} clip", c._clip, args.device, dt)
                if dt == "float32" and not name.startswith("detector"):  # detector: thresholded boxes may flip (info)
                    res.expect(dmax <= 0.05, f"{name}/float32 on {args.device}: confidences differ from the CPU by {dmax:.4f}")
                res.details[f"{name}/{dt}"] = {"max_conf_diff_vs_cpu": dmax, "same_verdicts_as_cpu": same,
                                               "unknown": unknown, "alignment": fb.alignment, "seconds": sec}
                res.rows.append(f"{name:14s} {dt:9s} {sec * 1e3:7.1f} ms  alignment {fb.alignment:.3f}  max |conf - cpu| "
                                f"{dmax:.4f}  verdicts {'= cpu' if same else '!= cpu'}  unknown {unknown}{extra}")

        res.sub(name, run)
    res.summary = f"{len(makers)} critics x {len(dtypes(args))} dtypes"


CHECKS: dict[str, Callable[[World, Args, Result], None]] = {
    "experts": check_experts, "determinism": check_determinism, "residency": check_residency,
    "batching": check_batching, "env": check_env, "llm": check_llm, "critics": check_critics,
}


# ---------------------------------------------------------------------------------------------- main
def environment(args: Args) -> dict[str, Any]:
    import importlib

    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "device": args.device, "argv": sys.argv[1:]}
    for mod in ("torch", "diffusers", "transformers", "huggingface_hub", "tokenizers", "accelerate", "safetensors",
                "gymnasium", "stable_baselines3", "numpy"):
        try:
            m = importlib.import_module(mod)
            info[mod] = f"{getattr(m, '__version__', '?')} ({Path(m.__file__ or '').parent.parent})"
        except Exception as exc:
            info[mod] = f"missing ({type(exc).__name__})"
    if args.device.startswith("cuda"):
        t0 = time.perf_counter()
        torch.zeros(1, device=args.device)
        torch.cuda.synchronize()
        info["cuda_init_s"] = time.perf_counter() - t0
        dev = torch.device(args.device)
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(dev)))
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        free, total = torch.cuda.mem_get_info(dev)
        info["gpu_memory"] = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        warm_up(args.device)
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
                        "cudnn_benchmark": torch.backends.cudnn.benchmark}
    return info


def warm_up(device: str) -> None:
    """Run the kinds of kernels the models use once per dtype (cuBLAS/cuBLASLt workspaces are allocated on first use
    and stay allocated: they must not count as pipeline memory in the residency check)."""
    import torch
    import torch.nn.functional as F

    for dt in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(4, 8, 16, 16, device=device, dtype=dt)
        F.conv2d(x, torch.randn(8, 8, 3, 3, device=device, dtype=dt), padding=1)
        q = torch.randn(2, 4, 16, 8, device=device, dtype=dt)
        F.scaled_dot_product_attention(q, q, q)
        F.linear(q, torch.randn(8, 8, device=device, dtype=dt), torch.randn(8, device=device, dtype=dt))
        q @ q.transpose(-1, -2)
    torch.cuda.synchronize(torch.device(device))


def quiet_progress_bars() -> None:
    """No "Loading weights" / "Loading pipeline components" bars in the log."""
    import importlib

    for mod in ("transformers.utils.logging", "diffusers.utils.logging"):
        with contextlib.suppress(Exception):  # an older or missing library: the bars stay, nothing else changes
            importlib.import_module(mod).disable_progress_bar()


def out_path(args: Args) -> Path:
    if args.out:
        return Path(args.out)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return ROOT / "runs" / "gpu_check.json"


def main(args: Args) -> int:
    # no hub is reachable: never let a lookup wait on the network
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
              "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(k, "1")
    t_start = time.perf_counter()
    import torch

    quiet_progress_bars()

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"device={args.device!r} but torch.cuda.is_available() is False (torch {torch.__version__}); pass "
              "--device cpu for a CPU dry run.", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    chosen = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown:
        print(f"unknown checks {unknown}; choose from {list(CHECKS)}", file=sys.stderr)
        return 2
    path = out_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        env_info = environment(args)
    except Exception:  # report and go on: the checks say more than a failed warm-up
        env_info = {"device": args.device, "environment_error": tail(traceback.format_exc())}
    print("gpu_check: " + "; ".join(f"{k}={v}" for k, v in env_info.items() if k != "argv"), flush=True)
    results: list[Result] = []
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    world = World(Path(tmp), args)

    def dump() -> None:
        doc = {"args": asdict(args), "environment": env_info, "ok": all(r.ok for r in results),
               "total_s": time.perf_counter() - t_start, "checks": {r.name: asdict(r) for r in results}}
        path.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")

    for name in chosen:
        res = Result(name)
        print(f"--- {name} ...", flush=True)
        t0 = time.perf_counter()
        res.sub(name, functools.partial(CHECKS[name], world, args, res))
        res.seconds = time.perf_counter() - t0
        results.append(res)
        for row in res.rows:
            print(f"    {row}", flush=True)
        print(f"--- {name}: {'ok' if res.ok else 'FAIL'} ({res.seconds:.1f}s)", flush=True)
        dump()

    total = time.perf_counter() - t_start
    print(f"\n{'check':12s} {'status':6s} {'time':>7s}  summary")
    for r in results:
        print(f"{r.name:12s} {'ok' if r.ok else 'FAIL':6s} {r.seconds:6.1f}s  {r.summary}")
    print(f"{'total':12s} {'':6s} {total:6.1f}s  device {args.device}"
          + (f" ({env_info.get('gpu')})" if "gpu" in env_info else ""))
    for r in results:
        if not r.ok:
            print(f"\n=== {r.name} failed:")
            for f in r.failures[:20]:
                print(f"  - {f}")
            for e in r.errors[:5]:
                print(e)
    dump()
    print(f"\nresults written to {path}")
    if args.keep:
        print(f"models kept in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 1


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line's :class:`Args` (``argv`` defaults to ``sys.argv[1:]``)."""
    return tyro.cli(Args, args=argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
