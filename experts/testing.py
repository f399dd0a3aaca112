# mypy: disable-error-code="call-arg,attr-defined,assignment,arg-type"
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
import inspect
import json
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experts.diffusers.expert import DEFAULT_REGISTRY
from experts.diffusers.residency import TASKS

__all__ = [
    "TINY_KINDS",
    "build_tiny_pipeline",
    "bytes_to_unicode",
    "save_tiny_pipelines",
    "torch_threads",
    "two_object_scene",
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
    lines = ["# tiny random pipelines written by experts/testing.py", ""]
    for name, kwargs in entries.items():
        kwargs = {"steps": steps, "width": size, "height": size, "dtype": "float32", "cost": 0.01, **kwargs,
                  **dict((extra or {}).get(name, {}))}
        lines += [f"[{name}]", 'target = "experts.diffusers.expert:DiffusersExpert"', f"[{name}.kwargs]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in kwargs.items()]
        lines += [f"[{name}.card]", 'vram_gb = 0.001', ""]
    p = Path(path)
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


# ====================================================================== every registered pipeline class
# Tiny random pipelines of every diffusers class the packaged registry names, all built in code: text
# encoders from configs, tokenizers from vocabularies written here (CLIP byte-level BPE, T5 unigram, Gemma and
# Qwen2 BPE over a character alphabet). Sizes follow the smallest shapes each architecture accepts; a 32x32
# call takes well under a second on a CPU.

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,:;!?'\"-_()[]{}<>|/=+*#@%&\n"


def _t5_tokenizer() -> Any:
    """A T5 (unigram) tokenizer over single characters: ids 0 pad, 1 </s>, 2 <unk>, then ``▁x`` and ``x``."""
    from transformers import T5Tokenizer

    chars = sorted(set(_ALPHABET.replace(" ", "").replace("\n", "")))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [("▁" + c, -1.0) for c in chars] + [(c, -2.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _bpe_vocab(specials: tuple[str, ...], byte_level: bool) -> tuple[dict[str, int], list[str]]:
    vocab: dict[str, int] = {}
    for s in specials:
        vocab.setdefault(s, len(vocab))
    chars = bytes_to_unicode() if byte_level else sorted(set(_ALPHABET.replace(" ", "▁")))
    for c in chars:
        vocab.setdefault(c, len(vocab))
    return vocab, []


def _gemma_tokenizer() -> Any:
    """A Gemma (BPE, ``▁`` for spaces, byte fallback off) tokenizer over single characters."""
    from transformers import GemmaTokenizer

    vocab, merges = _bpe_vocab(("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"),
                               byte_level=False)
    return GemmaTokenizer(vocab=vocab, merges=merges)


#: Qwen2-VL special tokens, in the order their ids are assigned (after the byte alphabet).
QWEN_SPECIAL: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _qwen2_tokenizer() -> Any:
    """A Qwen2 (byte-level BPE) tokenizer over the 256 byte characters plus :data:`QWEN_SPECIAL`."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab, merges = _bpe_vocab((), byte_level=True)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in QWEN_SPECIAL]})
    return tok


def _clip_text(tokenizer: Any, hidden: int = 32, projection: bool = False, proj_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                         intermediate_size=2 * hidden, layer_norm_eps=1e-5, num_attention_heads=2,
                         num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77,
                         projection_dim=proj_dim, hidden_act="gelu")
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _t5_encoder(tokenizer: Any, d_model: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1,
                   num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    return T5EncoderModel(cfg)


def _kl_vae(latent_channels: int = 4, blocks: int = 2, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[8] * blocks, in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=32, **extra)


def _sd_unet(in_channels: int, cross: int = 16, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, attention_head_dim=4, norm_num_groups=4, **extra)


def _ddim() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def _build_sdxl(cls: Any, folder: Path, in_channels: int) -> Any:
    te_tok = write_tiny_tokenizer(folder.parent / f"_tok_{folder.name}")
    te = _clip_text(te_tok, hidden=16)
    te2 = _clip_text(te_tok, hidden=16, projection=True, proj_dim=16)
    unet = _sd_unet(in_channels, cross=32, addition_embed_type="text_time", addition_time_embed_dim=4,
                    projection_class_embeddings_input_dim=16 + 6 * 4, transformer_layers_per_block=1)
    return cls(vae=_kl_vae(), text_encoder=te, text_encoder_2=te2, tokenizer=te_tok, tokenizer_2=te_tok, unet=unet,
               scheduler=_ddim())


def _build_flux(cls: Any, folder: Path, fill: bool = False) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    tok = write_tiny_tokenizer(folder.parent / f"_tok_{folder.name}")
    t5_tok = _t5_tokenizer()
    lc = 4
    # packed latents (4 * lc); FLUX.1-Fill adds packed masked-image latents (4 * lc) and the packed mask
    # (vae_scale_factor**2 * 4 = 4 * 4 with a two-block VAE).
    in_ch = 4 * lc + (4 * lc + 16 if fill else 0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=in_ch, out_channels=4 * lc, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=fill, axes_dims_rope=[4, 4, 8])
    vae = _kl_vae(lc, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    kw: dict[str, Any] = {}
    if "image_encoder" in inspect.signature(cls.__init__).parameters:
        kw = {"image_encoder": None, "feature_extractor": None}
    return cls(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_clip_text(tok, 32),
               tokenizer=tok, text_encoder_2=_t5_encoder(t5_tok, 32), tokenizer_2=t5_tok, transformer=transformer, **kw)


def _build_sd3(cls: Any, folder: Path) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    tok = write_tiny_tokenizer(folder.parent / f"_tok_{folder.name}")
    t5_tok = _t5_tokenizer()
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=32, out_channels=4)
    vae = _kl_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return cls(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
               text_encoder=_clip_text(tok, 16, projection=True, proj_dim=16), tokenizer=tok,
               text_encoder_2=_clip_text(tok, 16, projection=True, proj_dim=16), tokenizer_2=tok,
               text_encoder_3=_t5_encoder(t5_tok, 32), tokenizer_3=t5_tok, image_encoder=None, feature_extractor=None)


def _build_pixart(cls: Any, folder: Path) -> Any:
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    t5_tok = _t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    return cls(tokenizer=t5_tok, text_encoder=_t5_encoder(t5_tok, 32), vae=_kl_vae(4), transformer=transformer,
               scheduler=DPMSolverMultistepScheduler())


def _build_sana(cls: Any, folder: Path) -> Any:
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tok = _gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=16)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41)
    te = Gemma2Model(Gemma2Config(head_dim=8, hidden_size=8, intermediate_size=16, max_position_embeddings=512,
                                  num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=1,
                                  vocab_size=len(tok), pad_token_id=0, bos_token_id=2, eos_token_id=1,
                                  attn_implementation="eager"))
    return cls(tokenizer=tok, text_encoder=te, vae=vae, transformer=transformer,
               scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def _qwen_vl_text_encoder(tok: Any) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    cfg = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": len(tok), "max_position_embeddings": 2048,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"],
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16,
                       "fullatt_block_indexes": [0]},
        hidden_size=16, vocab_size=len(tok), image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return Qwen2_5_VLForConditionalGeneration(cfg)


def _build_qwen(cls: Any, folder: Path, edit: bool = False) -> Any:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    tok = _qwen2_tokenizer()
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    kw: dict[str, Any] = {}
    if edit:
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor

        kw["processor"] = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56,
                                                                                 max_pixels=56 * 56),
                                           tokenizer=tok, chat_template=None)
    return cls(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_qwen_vl_text_encoder(tok),
               tokenizer=tok, transformer=transformer, **kw)


def _build_gligen(cls: Any, folder: Path) -> Any:
    tok = write_tiny_tokenizer(folder.parent / f"_tok_{folder.name}")
    unet = _sd_unet(9, cross=16, attention_type="gated")  # the inpainting (box insertion) checkpoint
    return cls(vae=_kl_vae(), text_encoder=_clip_text(tok, 16, proj_dim=16), tokenizer=tok, unet=unet,
               scheduler=_ddim(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _build_kandinsky3(cls: Any, folder: Path) -> Any:
    """Kandinsky 3: T5 encoder + Kandinsky3UNet + MoVQ (VQModel), shapes after diffusers' own fast test.

    The pipeline sizes its latents as ``ceil(size / 64) * 8`` (it assumes an 8x MoVQ), so the tiny MoVQ has
    three blocks (4x): a 32 px request gives 8x8 latents and a 32 px image.
    """
    from diffusers import DDPMScheduler, Kandinsky3UNet, VQModel

    t5_tok = _t5_tokenizer()
    unet = Kandinsky3UNet(in_channels=4, time_embedding_dim=4, groups=2, attention_head_dim=4, layers_per_block=3,
                          block_out_channels=(32, 64), cross_attention_dim=4, encoder_hid_dim=32)
    movq = VQModel(block_out_channels=[32, 32, 32], down_block_types=["DownEncoderBlock2D"] * 2 + ["AttnDownEncoderBlock2D"],
                   up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 2, in_channels=3, out_channels=3,
                   latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, vq_embed_dim=4)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="squaredcos_cap_v2",
                              clip_sample=True, thresholding=False)
    return cls(tokenizer=t5_tok, text_encoder=_t5_encoder(t5_tok, 32), unet=unet, scheduler=scheduler, movq=movq)


#: diffusers class -> how to build a tiny one (every class the packaged registry names).
TINY_BUILDERS: dict[str, Any] = {
    "StableDiffusionPipeline": lambda cls, f: build_tiny_pipeline("text-to-image", f.parent / f"_tok_{f.name}"),
    "StableDiffusionImg2ImgPipeline": lambda cls, f: build_tiny_pipeline("text-to-image", f.parent / f"_tok_{f.name}"),
    "StableDiffusionInpaintPipeline": lambda cls, f: build_tiny_pipeline("inpaint", f.parent / f"_tok_{f.name}"),
    "StableDiffusionInstructPix2PixPipeline": lambda cls, f: build_tiny_pipeline("instruct-pix2pix",
                                                                                 f.parent / f"_tok_{f.name}"),
    "StableDiffusionXLPipeline": lambda cls, f: _build_sdxl(cls, f, 4),
    "StableDiffusionXLImg2ImgPipeline": lambda cls, f: _build_sdxl(cls, f, 4),
    "StableDiffusionXLInpaintPipeline": lambda cls, f: _build_sdxl(cls, f, 9),
    "StableDiffusion3Pipeline": _build_sd3,
    "FluxPipeline": _build_flux,
    "FluxKontextPipeline": _build_flux,
    "FluxFillPipeline": lambda cls, f: _build_flux(cls, f, fill=True),
    "PixArtSigmaPipeline": _build_pixart,
    "SanaPipeline": _build_sana,
    "QwenImagePipeline": _build_qwen,
    "QwenImageEditPipeline": lambda cls, f: _build_qwen(cls, f, edit=True),
    "StableDiffusionGLIGENPipeline": _build_gligen,
    "Kandinsky3Pipeline": _build_kandinsky3,
    "Kandinsky3Img2ImgPipeline": _build_kandinsky3,
}


def save_tiny(pipeline_class: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random pipeline of ``pipeline_class`` (a key of :data:`TINY_BUILDERS`) with weights drawn
    from ``seed``, ``save_pretrained`` it to ``folder`` and return the folder."""
    if pipeline_class not in TINY_BUILDERS:
        raise ValueError(f"pipeline_class={pipeline_class!r} has no tiny builder; known: {sorted(TINY_BUILDERS)}.")
    import diffusers
    import torch

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    pipe = TINY_BUILDERS[pipeline_class](getattr(diffusers, pipeline_class), folder)
    pipe.save_pretrained(str(folder))
    return folder


#: Pipeline classes named by the packaged registry that cannot be built tiny on this machine, and why.
NOT_BUILDABLE: dict[str, str] = {
    "QwenImageEditPipeline": (
        "its Qwen2VLProcessor requires transformers' video-processor registry, which only exists with "
        "torchvision installed (this machine has none, by rule); with torchvision the builder above works"),
}
#: Call arguments that keep tiny pipelines tiny (each dropped where a pipeline does not take it).
TINY_CALL_KWARGS: dict[str, Any] = {"max_sequence_length": 32, "use_resolution_binning": False, "_auto_resize": False}


def registry_classes(registry_path: str | Path | None = None) -> dict[str, str]:
    """Entry name -> diffusers pipeline class of every entry of a registry TOML (default: the packaged one)."""


    data = tomllib.loads(Path(registry_path or DEFAULT_REGISTRY).read_text(encoding="utf-8"))
    return {name: t["kwargs"].get("pipeline_class") or TASKS[t["kwargs"].get("task", "text-to-image")]
            for name, t in data.items() if isinstance(t, dict)}


def write_tiny_copy_of_registry(
    root: str | Path, *, registry_path: str | Path | None = None, names: Sequence[str] | None = None,
    size: int = 32, steps: int = 2, seed: int = 0,
) -> tuple[Path, dict[str, str]]:
    """A copy of a registry whose entries keep every setting but point at tiny random pipelines of their class.

    One tiny folder per distinct ``model`` of the chosen entries (entries that share a model share its folder,
    and so derive their pipeline through ``from_pipe`` as with real weights). Overrides: ``model`` (the folder),
    ``steps``, ``width``/``height`` (``size``), ``dtype`` float32, no ``variant``, and ``call_kwargs`` extended
    with :data:`TINY_CALL_KWARGS`. Entries whose class is in :data:`NOT_BUILDABLE` are left out.

    Returns:
        The registry path and entry name -> class of the entries written.
    """


    root = Path(root)
    src = Path(registry_path or DEFAULT_REGISTRY)
    data = tomllib.loads(src.read_text(encoding="utf-8"))
    classes = registry_classes(src)
    chosen = [n for n in (names or list(classes)) if classes[n] not in NOT_BUILDABLE]
    folders: dict[str, Path] = {}
    lines = [f"# tiny copy of {src.name} written by experts.testing.write_tiny_copy_of_registry", ""]
    for i, name in enumerate(chosen):
        kw = dict(data[name]["kwargs"])
        model = kw["model"]
        if model not in folders:
            folders[model] = save_tiny(classes[name], root / f"m{len(folders)}-{classes[name]}", seed=seed + i)
        strength = float(kw.get("strength", 1.0))
        n_steps = max(steps, math.ceil(1.0 / strength - 1e-9))  # img2img runs int(steps * strength) >= 1 steps
        kw.update(model=str(folders[model]), steps=n_steps, width=size, height=size, dtype="float32",
                  call_kwargs={**dict(kw.get("call_kwargs", {})), **TINY_CALL_KWARGS})
        kw.pop("variant", None)
        lines += [f'["{name}"]', 'target = "experts.diffusers.expert:DiffusersExpert"', f'["{name}".kwargs]']
        lines += [f"{k} = {_toml_inline(v)}" for k, v in kw.items()]
        lines += [f'["{name}".card]'] + [f"{k} = {_toml_inline(v)}" for k, v in data[name].get("card", {}).items()]
        lines.append("")
    out = root / "registry.toml"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out, {n: classes[n] for n in chosen}


def _toml_inline(v: Any) -> str:
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_inline(x)}" for k, x in v.items()) + " }"
    return _toml_value(v)


def two_object_scene() -> np.ndarray:
    """A 32x32 test image (HxWx3 uint8) with a red square at (2, 2, 12, 12) and a brown one at (18, 16, 30, 28)
    (boxes ``(x1, y1, x2, y2)`` in pixels) on light gray: the scene of the grounded-edit tests."""
    img = np.full((32, 32, 3), 200, dtype=np.uint8)
    img[2:12, 2:12] = (220, 30, 30)
    img[16:28, 18:30] = (120, 80, 40)
    return img
