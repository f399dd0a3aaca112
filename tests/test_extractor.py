"""PoserExtractor: output shapes per key kind, features_dim from the space, image layouts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from agents.extractor import ExtractorConfigError, PoserExtractor, classify_space

th.set_num_threads(1)

D = 384
B = 5


def env_space(n_experts: int = 4, thumbnail: int | None = None, channels_first: bool = False) -> spaces.Dict:
    d: dict[str, spaces.Space] = {
        "prompt": spaces.Box(-1, 1, (D,), np.float32),
        "command": spaces.Box(-1, 1, (D,), np.float32),
        "feedback": spaces.Box(0, 1, (34,), np.float32),
        "progress": spaces.Box(0, 1, (5,), np.float32),
        "history": spaces.Box(0, 1, (2 * n_experts + 2,), np.float32),
    }
    if thumbnail:
        shape = (3, thumbnail, thumbnail) if channels_first else (thumbnail, thumbnail, 3)
        d["thumbnail"] = spaces.Box(0, 255, shape, np.uint8)
    return spaces.Dict(d)


def batch(space: spaces.Space, n: int = B, seed: int = 0) -> dict[str, th.Tensor] | th.Tensor:
    """n samples, preprocessed the way an SB3 policy does it (floats; images / 255)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        raw: dict[str, th.Tensor] | th.Tensor = {k: th.as_tensor(np.stack([s[k] for s in samples])) for k in space}
    else:
        raw = th.as_tensor(np.stack(samples))
    return preprocess_obs(raw, space, normalize_images=True)


@pytest.mark.parametrize(
    ("space", "kwargs", "expected_dim"),
    [
        # embedding keys only: one projection each
        (spaces.Dict({"prompt": spaces.Box(-1, 1, (D,), np.float32), "command": spaces.Box(-1, 1, (D,), np.float32)}),
         {"embed_dim": 32}, 64),
        # integer token ids -> embedding bag
        (spaces.Dict({"tokens": spaces.Box(0, 999, (16,), np.int64)}), {"embed_dim": 24}, 24),
        # numeric keys: concatenated through one MLP
        (spaces.Dict({"feedback": spaces.Box(0, 1, (34,), np.float32), "progress": spaces.Box(0, 1, (5,), np.float32)}),
         {"numeric_dim": 16}, 16),
        # numeric identity
        (spaces.Dict({"feedback": spaces.Box(0, 1, (34,), np.float32), "progress": spaces.Box(0, 1, (5,), np.float32)}),
         {"numeric_dim": None}, 39),
        # image channel-last (as the env makes it) and channel-first (as VecTransposeImage makes it)
        (spaces.Dict({"thumbnail": spaces.Box(0, 255, (64, 64, 3), np.uint8)}), {"cnn_dim": 40}, 40),
        (spaces.Dict({"thumbnail": spaces.Box(0, 255, (3, 64, 64), np.uint8)}), {"cnn_dim": 40}, 40),
        (spaces.Dict({"thumbnail": spaces.Box(0, 255, (16, 16, 1), np.uint8)}), {"cnn_dim": 8}, 8),
        # the env's full observation, with and without a thumbnail
        (env_space(), {}, 64 + 64 + 64),
        (env_space(thumbnail=32), {}, 64 * 4),
        (env_space(thumbnail=32, channels_first=True), {"embed_dim": 8, "numeric_dim": None, "cnn_dim": 16},
         8 + 8 + 34 + 5 + 10 + 16),
        # the paper env: a flat Box is one numeric input
        (spaces.Box(-1, 1, (2 * D,), np.float32), {"numeric_dim": 128}, 128),
        (spaces.Box(-1, 1, (2 * D,), np.float32), {"numeric_dim": None}, 2 * D),
    ],
)
def test_output_shape_and_features_dim(space, kwargs, expected_dim):
    ext = PoserExtractor(space, **kwargs)
    assert ext.features_dim == expected_dim
    out = ext(batch(space))
    assert out.shape == (B, expected_dim)
    assert out.dtype == th.float32
    assert th.isfinite(out).all()
    # every parameter (if any: numeric identity has none) is reached by the gradient
    params = dict(ext.named_parameters())
    if not params:
        assert kwargs.get("numeric_dim", 64) is None
    else:
        out.sum().backward()
        for name, p in params.items():
            assert p.grad is not None, name


def test_kinds_of_env_keys():
    space = env_space(thumbnail=32)
    space.spaces["ids"] = spaces.Box(0, 9, (4,), np.int32)
    kinds = {k: classify_space(k, s) for k, s in space.items()}
    assert kinds == {"command": "embedding", "prompt": "embedding", "feedback": "numeric", "progress": "numeric",
                     "history": "numeric", "thumbnail": "image", "ids": "ids"}
    # a key not in embedding_keys is numeric
    assert classify_space("prompt", space["prompt"], embedding_keys=("command",)) == "numeric"
    ext = PoserExtractor(space, embedding_keys=("command",), embed_dim=8, numeric_dim=None, cnn_dim=4)
    assert ext.features_dim == 8 + 8 + (D + 34 + 5 + 10) + 4


def test_numeric_identity_is_concatenation_in_key_order():
    space = spaces.Dict({"a": spaces.Box(0, 1, (3,), np.float32), "b": spaces.Box(0, 1, (2,), np.float32)})
    ext = PoserExtractor(space, numeric_dim=None)
    obs = {"a": th.tensor([[0.1, 0.2, 0.3]]), "b": th.tensor([[0.4, 0.5]])}
    assert th.equal(ext(obs), th.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]]))


def test_token_ids_ignore_padding_and_accept_floats():
    space = spaces.Dict({"tokens": spaces.Box(0, 20, (6,), np.int64)})
    ext = PoserExtractor(space, embed_dim=5)
    w = ext.id_bags["tokens"].weight
    ids = th.tensor([[7, 0, 0, 0, 0, 0], [7, 3, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    out = ext({"tokens": ids})
    assert th.allclose(out[0], w[7])  # padding does not dilute the mean
    assert th.allclose(out[1], (w[7] + w[3]) / 2)
    assert th.equal(out[2], th.zeros(5))  # an all-padding row is zeros
    # SB3's preprocess_obs casts every Box to float: same answer
    assert th.allclose(ext({"tokens": ids.float()}), out)
    assert ext.id_bags["tokens"].num_embeddings == 21  # vocab = high + 1


def test_image_layouts_and_scaling_agree():
    last = spaces.Dict({"thumbnail": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    first = spaces.Dict({"thumbnail": spaces.Box(0, 255, (3, 16, 16), np.uint8)})
    th.manual_seed(0)
    e_last = PoserExtractor(last, cnn_dim=8)
    e_first = PoserExtractor(first, cnn_dim=8)
    e_first.load_state_dict(e_last.state_dict())
    img = th.as_tensor(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    pre = preprocess_obs({"thumbnail": img}, last)  # floats in [0, 1]
    ref = e_last(pre)
    # channel-first input (as VecTransposeImage produces) gives the same features
    assert th.allclose(e_first({"thumbnail": pre["thumbnail"].permute(0, 3, 1, 2)}), ref, atol=1e-6)
    # a raw uint8 tensor is scaled by 255 inside the extractor
    assert th.allclose(e_last({"thumbnail": img}), ref, atol=1e-6)
    # scale_images=True for policies with normalize_images=False (float input in [0, 255])
    e_scaled = PoserExtractor(last, cnn_dim=8, scale_images=True)
    e_scaled.load_state_dict(e_last.state_dict())
    assert th.allclose(e_scaled({"thumbnail": img.float()}), ref, atol=1e-6)
    # and scaling matters: unscaled floats in [0, 255] give different features
    assert not th.allclose(e_last({"thumbnail": img.float()}), ref, atol=1e-3)


def test_features_differ_between_inputs():
    space = env_space(thumbnail=16)
    ext = PoserExtractor(space)
    obs = batch(space, n=2)
    out = ext(obs)
    assert not th.allclose(out[0], out[1])


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (spaces.Dict({"action": spaces.Discrete(3)}), r"observation key 'action' has unsupported space Discrete"),
        (spaces.Dict({"grid": spaces.Box(0, 1, (4, 4), np.float32)}), r"'grid' has a 2-D Box"),
        (spaces.Dict({"img": spaces.Box(0, 255, (8, 8, 5), np.uint8)}), r"'img'.*5 channels"),
        (spaces.Dict({"img": spaces.Box(0, 255, (8, 8, 3), np.int32)}), r"'img'.*3-D Box of dtype int32 is not an image"),
        (spaces.Dict({"ids": spaces.Box(-1, 5, (4,), np.int64)}), r"'ids'.*negative low bounds"),
        (spaces.Dict({"ids": spaces.Box(0, 2**31 - 2, (4,), np.int64)}), r"'ids'.*vocabulary"),
        (spaces.Dict({}), r"empty spaces.Dict"),
        (spaces.Box(0, 10, (4,), np.int64), r"not supported: pass a spaces.Dict"),
        (spaces.Discrete(4), r"not supported: pass a spaces.Dict"),
    ],
)
def test_unsupported_space_errors(space, match):
    with pytest.raises(ExtractorConfigError, match=match):
        PoserExtractor(space)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 0}, r"embed_dim=0 must be an int >= 1"),
        ({"cnn_dim": 2.5}, r"cnn_dim=2.5 must be an int >= 1"),
        ({"numeric_dim": -3}, r"numeric_dim=-3 must be an int >= 1 or None"),
        ({"embedding_keys": "prompt"}, r"embedding_keys='prompt' must be a sequence"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ExtractorConfigError, match=match):
        PoserExtractor(env_space(), **kwargs)


def test_forward_errors_name_the_problem():
    ext = PoserExtractor(env_space())
    obs = batch(env_space())
    assert isinstance(obs, dict)
    del obs["history"]
    with pytest.raises(ExtractorConfigError, match=r"lacks keys \['history'\]"):
        ext(obs)
    with pytest.raises(ExtractorConfigError, match=r"pass a dict of tensors"):
        ext(th.zeros(2, 10))
    flat = PoserExtractor(spaces.Box(-1, 1, (8,), np.float32))
    with pytest.raises(ExtractorConfigError, match=r"flat Box; pass a tensor"):
        flat({"obs": th.zeros(2, 8)})
