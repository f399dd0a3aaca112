"""Builders of tiny random diffusers pipelines, made entirely in code (no download: tokenizer and all).

Every pipeline is a Stable-Diffusion-shaped pipeline with a few thousand parameters:

- ``"text-to-image"``: :class:`~diffusers.StableDiffusionPipeline` (UNet with 4 input channels), also used
  for image-to-image through ``from_pipe`` (shared weights);
- ``"instruct-pix2pix"``: :class:`~diffusers.StableDiffusionInstructPix2PixPipeline` (UNet with 8 input
  channels: noisy latents + image latents);
- ``"inpaint"``: :class:`~diffusers.StableDiffusionInpaintPipeline` (UNet with 9 input channels: noisy
  latents + mask + masked-image latents).

The CLIP tokenizer is built from a ``vocab.json``/``merges.txt`` written here (byte-level alphabet plus a
handful of merges). The VAE has two blocks (scale factor 2), so a 32x32 image has 16x16 latents; sizes must
be multiples of 8. :func:`save_tiny_pipelines` writes them with ``save_pretrained`` and
:func:`write_tiny_registry` writes a registry TOML pointing at the folders, so tests load them the way a user
loads real models: through the registry, by path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "TINY_KINDS",
    "build_tiny_pipeline",
    "bytes_to_unicode",
    "save_tiny_pipelines",
    "torch_threads",
    "write_tiny_registry",
    "write_tiny_tokenizer",
]

#: kind -> UNet input channels
TINY_KINDS: dict[str, int] = {"text-to-image": 4, "instruct-pix2pix": 8, "inpaint": 9}

_PIPELINE_CLASS = {
    "text-to-image": "StableDiffusionPipeline",
    "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
}
_MERGES = ["r e", "re d</w>", "c l", "cl o", "o c", "b l", "bl u", "blu e</w>", "d o", "do g</w>", "t h", "th e</w>"]


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (restored after).

    Tiny models gain nothing from threads, and on a shared, oversubscribed CPU torch's spinning worker
    threads make them 10x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bytes_to_unicode() -> list[str]:
    """The 256 printable characters GPT-2/CLIP byte-level BPE uses for the bytes 0..255, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    order = sorted(range(256), key=lambda i: bs[i])
    return [chr(cs[i]) for i in order]


def write_tiny_tokenizer(folder: str | Path) -> Any:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP BPE tokenizer into ``folder`` and load it.

    The vocabulary is ``<|startoftext|>`` (id 0), ``<|endoftext|>`` (id 1, also pad), the 256 byte
    characters, the same with the ``</w>`` end-of-word suffix, and the results of a few merges (about 530
    tokens). Returns a :class:`transformers.CLIPTokenizer` with ``model_max_length=77``.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = bytes_to_unicode()
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    for merge in _MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def build_tiny_pipeline(kind: str, tokenizer_dir: str | Path, seed: int = 0,
                        unet_channels: tuple[int, int] = (8, 16)) -> Any:
    """A tiny random pipeline of ``kind`` (a key of :data:`TINY_KINDS`), weights drawn with ``seed``.

    Args:
        kind: ``"text-to-image"``, ``"instruct-pix2pix"`` or ``"inpaint"``.
        tokenizer_dir: Folder where the tokenizer files are written.
        seed: Seed of the random weights.
        unet_channels: The UNet's two block widths (multiples of 4); larger ones give a GPU some work
            (e.g. ``(64, 128)``: about 5M parameters). The VAE and text encoder stay tiny.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"kind={kind!r} must be one of {sorted(TINY_KINDS)}.")
    if len(unet_channels) != 2 or any(c < 4 or c % 4 for c in unet_channels):
        raise ValueError(f"unet_channels={unet_channels!r} must be two multiples of 4.")
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = write_tiny_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        sample_size=16,
        in_channels=TINY_KINDS[kind],
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
            layer_norm_eps=1e-5, num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tokenizer),
            max_position_embeddings=77, projection_dim=16,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    cls = getattr(diffusers, _PIPELINE_CLASS[kind])
    pipe = cls(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipelines(root: str | Path, kinds: tuple[str, ...] = tuple(TINY_KINDS), seed: int = 0,
                        unet_channels: tuple[int, int] = (8, 16)) -> dict[str, Path]:
    """Build each kind and ``save_pretrained`` it under ``root/<kind>``; returns kind -> folder."""
    root = Path(root)
    out: dict[str, Path] = {}
    for i, kind in enumerate(kinds):
        folder = root / kind
        pipe = build_tiny_pipeline(kind, root / f"_tokenizer_{kind}", seed=seed + i, unet_channels=unet_channels)
        pipe.save_pretrained(str(folder))
        out[kind] = folder
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def write_tiny_registry(
    path: str | Path, folders: Mapping[str, Path], *, size: int = 32, steps: int = 2,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a registry TOML with entries ``tiny-t2i``, ``tiny-img2img``, ``tiny-ip2p``, ``tiny-inpaint``
    (those whose folder is in ``folders``).

    ``tiny-t2i`` and ``tiny-img2img`` name the same folder, so they share weights through ``from_pipe``.
    ``extra`` adds or overrides kwargs per entry name.
    """
    f = {k: str(v) for k, v in folders.items()}
    entries: dict[str, dict[str, Any]] = {}
    if "text-to-image" in f:
        entries["tiny-t2i"] = {"model": f["text-to-image"], "task": "text-to-image", "guidance_scale": 5.0}
        entries["tiny-img2img"] = {"model": f["text-to-image"], "task": "image-to-image", "strength": 0.75,
                                   "guidance_scale": 5.0}
    if "instruct-pix2pix" in f:
        entries["tiny-ip2p"] = {"model": f["instruct-pix2pix"], "task": "instruct-pix2pix", "guidance_scale": 5.0,
                                "image_guidance_scale": 1.5}
    if "inpaint" in f:
        entries["tiny-inpaint"] = {"model": f["inpaint"], "task": "inpaint", "strength": 1.0, "guidance_scale": 5.0}
    lines = ["# tiny random pipelines written by tests/tiny_diffusers.py", ""]
    for name, kwargs in entries.items():
        kwargs = {"steps": steps, "width": size, "height": size, "dtype": "float32", "cost": 0.01, **kwargs,
                  **dict((extra or {}).get(name, {}))}
        lines += [f"[{name}]", 'target = "experts.diffusers.expert:DiffusersExpert"', f"[{name}.kwargs]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in kwargs.items()]
        lines += [f"[{name}.card]", 'vram_gb = 0.001', ""]
    p = Path(path)
    p.write_text("\n".join(lines), encoding="utf-8")
    return p
