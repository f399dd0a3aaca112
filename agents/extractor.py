"""A Stable-Baselines3 features extractor for the image-poser observations.

:class:`PoserExtractor` follows SB3's ``BaseFeaturesExtractor`` contract (``stable_baselines3/common/torch_layers.py``):
it is built from the observation space alone (never from the env), exposes ``features_dim``, and maps a batch of
*preprocessed* observations (SB3's ``preprocess_obs``: every ``Box`` cast to float, uint8 images divided by 255 when
the policy has ``normalize_images=True``) to a ``(batch, features_dim)`` float tensor.

Each key of a ``Dict`` space is routed by its kind:

============================  =============================================  ==========================================
kind                          space                                          module
============================  =============================================  ==========================================
embedding                     1-D float ``Box`` named in ``embedding_keys``  ``LayerNorm -> Linear -> ReLU`` to
                                                                             ``embed_dim`` (one projection per key)
token ids                     1-D integer ``Box`` with ``low >= 0``          ``EmbeddingBag(high + 1, embed_dim,
                                                                             mode="mean", padding_idx=0)``
numeric                       any other 1-D float ``Box``                    concatenated, then ``Linear -> ReLU`` to
                                                                             ``numeric_dim`` (identity if ``None``)
image                         3-D ``Box`` (uint8 ``[0, 255]`` or float       small CNN (3 strided convs, adaptive
                              ``[0, 1]``), channel-last or channel-first     pooling) then ``Linear -> ReLU`` to
                                                                             ``cnn_dim``
============================  =============================================  ==========================================

A flat ``Box`` (the paper env's ``Box(-1, 1, (768,))``) is treated as one numeric key.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["DEFAULT_EMBEDDING_KEYS", "ExtractorConfigError", "PoserExtractor", "classify_space"]

#: Keys treated as text embeddings by default (the env's ``"prompt"`` and ``"command"``).
DEFAULT_EMBEDDING_KEYS: tuple[str, ...] = ("prompt", "command")

#: Largest vocabulary an integer token-id key may declare (``high + 1``); guards against ``Box(0, 2**31 - 1)``.
MAX_VOCAB = 1_000_000

_SUPPORTED = (
    "supported spaces: a 1-D float Box (text embedding if its key is in embedding_keys, else numeric), a 1-D integer "
    "Box with low >= 0 (token ids, 0 = padding), a 3-D Box image (uint8 in [0, 255] or float in [0, 1], HxWxC or "
    "CxHxW with C in {1, 3, 4}); flatten other spaces first (e.g. gymnasium.wrappers.FlattenObservation)"
)


class ExtractorConfigError(ValueError):
    """An observation space or argument the extractor cannot handle; the message names the key and the fix."""


def _is_int_dtype(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer))


def _image_layout(space: spaces.Box, key: str) -> tuple[bool, int, int, int]:
    """Return ``(channels_first, C, H, W)`` of a 3-D image Box (SB3's heuristic: the smallest dim is channels)."""
    shape = tuple(int(s) for s in space.shape)
    channels_first = int(np.argmin(shape)) == 0
    c, h, w = (shape[0], shape[1], shape[2]) if channels_first else (shape[2], shape[0], shape[1])
    if c not in (1, 3, 4):
        raise ExtractorConfigError(
            f"observation key {key!r}: image space of shape {shape} has {c} channels (from the smallest dimension); "
            "expected 1, 3 or 4 channels, channel-last (H, W, C) or channel-first (C, H, W)."
        )
    return channels_first, c, h, w


def classify_space(key: str, space: gym.Space, embedding_keys: Sequence[str] = DEFAULT_EMBEDDING_KEYS) -> str:
    """Kind of one observation entry: ``"embedding"``, ``"ids"``, ``"numeric"`` or ``"image"``.

    Raises :class:`ExtractorConfigError` (naming ``key``) for anything else.
    """
    if not isinstance(space, spaces.Box):
        raise ExtractorConfigError(f"observation key {key!r} has unsupported space {space!r}; {_SUPPORTED}.")
    if len(space.shape) == 1:
        if _is_int_dtype(space.dtype):
            if np.any(space.low < 0):
                raise ExtractorConfigError(
                    f"observation key {key!r}: integer Box {space!r} has negative low bounds; token ids must be "
                    ">= 0 (0 = padding). Use a float Box for signed numbers."
                )
            vocab = int(np.max(space.high)) + 1
            if vocab > MAX_VOCAB:
                raise ExtractorConfigError(
                    f"observation key {key!r}: integer Box high={int(np.max(space.high))} implies a vocabulary of "
                    f"{vocab} > {MAX_VOCAB}; set the Box's high to the largest token id (vocab size - 1)."
                )
            return "ids"
        return "embedding" if key in embedding_keys else "numeric"
    if len(space.shape) == 3:
        if space.dtype == np.uint8 or np.issubdtype(space.dtype, np.floating):
            _image_layout(space, key)
            return "image"
        raise ExtractorConfigError(
            f"observation key {key!r}: 3-D Box of dtype {space.dtype} is not an image; use uint8 in [0, 255] or "
            "float in [0, 1]."
        )
    raise ExtractorConfigError(
        f"observation key {key!r} has a {len(space.shape)}-D Box of shape {space.shape}; {_SUPPORTED}."
    )


class _SmallCNN(nn.Module):
    """Three strided 3x3/5x5 convs, adaptive average pooling to 4x4, a linear layer; input (B, C, H, W) in [0, 1]."""

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, out_dim),
            nn.ReLU(),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.net(x)


class PoserExtractor(BaseFeaturesExtractor):
    """Features extractor for the image-poser ``Dict`` observation (or a flat ``Box``).

    :param observation_space: a ``spaces.Dict`` of supported entries (see the module docstring) or one 1-D float
        ``Box`` (treated as a numeric key). Images may be channel-last (as the env produces them) or channel-first
        (as SB3's ``VecTransposeImage`` produces them); the layout is read from the space.
    :param embedding_keys: keys of 1-D float Boxes projected as text embeddings (default ``("prompt", "command")``);
        a key listed here but absent from the space is ignored.
    :param embed_dim: output size of each embedding projection and each token-id bag (>= 1, default 64).
    :param numeric_dim: output size of the MLP over the concatenated numeric keys (>= 1, default 64), or ``None``
        to pass them through unchanged (identity).
    :param cnn_dim: output size of the image CNN (>= 1, default 64).
    :param scale_images: divide float image inputs by 255 inside the extractor. Leave ``False`` under an SB3 policy
        with ``normalize_images=True`` (the default: ``preprocess_obs`` already scaled them to [0, 1]); set ``True``
        when the policy has ``normalize_images=False`` and the image space is uint8. uint8 *tensors* (raw
        observations that never went through ``preprocess_obs``) are always divided by 255.

    ``features_dim = embed_dim * (#embedding keys + #id keys) + numeric size + cnn_dim * #image keys`` where the
    numeric size is ``numeric_dim`` (or the summed numeric widths when ``numeric_dim is None``).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        embedding_keys: Sequence[str] = DEFAULT_EMBEDDING_KEYS,
        embed_dim: int = 64,
        numeric_dim: int | None = 64,
        cnn_dim: int = 64,
        scale_images: bool = False,
    ) -> None:
        for name, value in (("embed_dim", embed_dim), ("cnn_dim", cnn_dim), ("numeric_dim", numeric_dim)):
            if name == "numeric_dim" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ExtractorConfigError(f"{name}={value!r} must be an int >= 1" + (
                    " or None (identity)." if name == "numeric_dim" else "."))
        if isinstance(embedding_keys, str):
            raise ExtractorConfigError(
                f"embedding_keys={embedding_keys!r} must be a sequence of key names, e.g. ({embedding_keys!r},)."
            )
        self._flat = not isinstance(observation_space, spaces.Dict)
        if self._flat:
            if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1
                    and not _is_int_dtype(observation_space.dtype)):
                raise ExtractorConfigError(
                    f"observation space {observation_space!r} is not supported: pass a spaces.Dict of supported "
                    "entries or a flat 1-D float Box (treated as one numeric input). " + _SUPPORTED + "."
                )
            entries: dict[str, gym.Space] = {"obs": observation_space}
            kinds = {"obs": "numeric"}
        else:
            assert isinstance(observation_space, spaces.Dict)
            if len(observation_space.spaces) == 0:
                raise ExtractorConfigError("observation space is an empty spaces.Dict; it needs at least one key.")
            entries = dict(observation_space.spaces)
            kinds = {k: classify_space(k, s, embedding_keys) for k, s in entries.items()}

        embed_modules: dict[str, nn.Module] = {}
        id_modules: dict[str, nn.Module] = {}
        image_modules: dict[str, nn.Module] = {}
        image_layout: dict[str, bool] = {}
        numeric_keys: list[str] = []
        numeric_in = 0
        features_dim = 0
        for key, space in entries.items():
            kind = kinds[key]
            assert isinstance(space, spaces.Box)
            if kind == "embedding":
                d = int(space.shape[0])
                embed_modules[key] = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(embed_dim)), nn.ReLU())
                features_dim += int(embed_dim)
            elif kind == "ids":
                vocab = int(np.max(space.high)) + 1
                id_modules[key] = nn.EmbeddingBag(vocab, int(embed_dim), mode="mean", padding_idx=0)
                features_dim += int(embed_dim)
            elif kind == "numeric":
                numeric_keys.append(key)
                numeric_in += int(space.shape[0])
            else:  # image
                channels_first, c, _, _ = _image_layout(space, key)
                image_layout[key] = channels_first
                image_modules[key] = _SmallCNN(c, int(cnn_dim))
                features_dim += int(cnn_dim)
        numeric_out = 0
        numeric_module: nn.Module | None = None
        if numeric_keys:
            if numeric_dim is None:
                numeric_module = nn.Identity()
                numeric_out = numeric_in
            else:
                numeric_module = nn.Sequential(nn.Linear(numeric_in, int(numeric_dim)), nn.ReLU())
                numeric_out = int(numeric_dim)
        features_dim += numeric_out

        super().__init__(observation_space, features_dim)
        self.kinds: dict[str, str] = kinds
        self.scale_images = bool(scale_images)
        self.embeds = nn.ModuleDict(embed_modules)
        self.id_bags = nn.ModuleDict(id_modules)
        self.cnns = nn.ModuleDict(image_modules)
        self.numeric_keys: tuple[str, ...] = tuple(numeric_keys)
        self.numeric = numeric_module if numeric_module is not None else nn.Identity()
        self._channels_first = image_layout
        self._order: tuple[str, ...] = tuple(entries)

    def forward(self, observations: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        """Map a batch of observations (dict of ``(B, ...)`` tensors, or a ``(B, D)`` tensor) to ``(B, features_dim)``."""
        if self._flat:
            if isinstance(observations, dict):
                raise ExtractorConfigError("this extractor was built for a flat Box; pass a tensor, not a dict.")
            obs: dict[str, th.Tensor] = {"obs": observations}
        else:
            if not isinstance(observations, dict):
                raise ExtractorConfigError(
                    f"this extractor was built for a Dict space with keys {list(self._order)}; pass a dict of tensors."
                )
            missing = [k for k in self._order if k not in observations]
            if missing:
                raise ExtractorConfigError(f"observation dict lacks keys {missing}; expected {list(self._order)}.")
            obs = observations
        parts: list[th.Tensor] = []
        for key in self._order:
            kind = self.kinds[key]
            if kind == "embedding":
                parts.append(self.embeds[key](obs[key].float()))
            elif kind == "ids":
                ids = th.round(obs[key].float()).long() if obs[key].is_floating_point() else obs[key].long()
                parts.append(self.id_bags[key](ids))
            elif kind == "image":
                x = obs[key]
                raw_uint8 = x.dtype == th.uint8
                x = x.float()
                if raw_uint8 or self.scale_images:
                    x = x / 255.0
                if not self._channels_first[key]:
                    x = x.permute(0, 3, 1, 2)
                parts.append(self.cnns[key](x))
        if self.numeric_keys:
            num = th.cat([obs[k].float().reshape(obs[k].shape[0], -1) for k in self.numeric_keys], dim=1)
            parts.append(self.numeric(num))
        return th.cat(parts, dim=1)
