"""The opt-in ``glyph_variants`` card field: bounded glyph shapes per noun (a render cache), defaults unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from experts.registry import default_expert_names, make_expert
from experts.sim.experts import MAX_GLYPH_VARIANTS, SimProfile
from experts.sim.render import cache_info, clear_cache, render
from experts.sim.scene import SceneObject
from poser_env.prompts import geneval_style

PROMPT = "generate: two red clocks and a blue dog on the left of three cats"


def test_default_is_continuous_and_unchanged() -> None:
    assert SimProfile().glyph_variants == 0
    e = make_expert("sim/sketch")
    assert e.profile.glyph_variants == 0
    out = e(PROMPT, None, seed=3)
    assert all(o.glyph_variant == -1 for o in out.state.objects)
    # glyph_variants=0 given explicitly is the default: the same draws, the same pixels
    same = make_expert("sim/sketch", glyph_variants=0)(PROMPT, None, seed=3)
    assert same.image.tobytes() == out.image.tobytes()
    assert same.state == out.state


def test_variants_draw_the_same_rng_sequence_and_quantise_noise() -> None:
    cont = make_expert("sim/sketch")(PROMPT, None, seed=4).state
    var = make_expert("sim/sketch", glyph_variants=5)(PROMPT, None, seed=4).state
    # the same layout, colours and patterns (no extra draws): only the glyph fields differ
    assert [replace(o, glyph_noise=0.0, glyph_variant=-1) for o in var.objects] == \
        [replace(o, glyph_noise=0.0) for o in cont.objects]
    for o, c in zip(var.objects, cont.objects, strict=True):
        assert 0 <= o.glyph_variant < 5
        assert o.glyph_noise == pytest.approx(o.glyph_variant / 4)
        assert abs(o.glyph_noise - c.glyph_noise) <= 0.125 + 1e-9  # the nearest of the levels 0, 1/4, ..., 1


def test_variants_are_deterministic() -> None:
    e = make_expert("sim/layout", glyph_variants=8)
    a = e(PROMPT, None, seed=11)
    clear_cache()
    b = make_expert("sim/layout", glyph_variants=8)(PROMPT, None, seed=11)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.state == b.state
    assert render(a.state).tobytes() == a.image.tobytes()


def test_variant_cache_is_bounded_by_nouns_times_variants() -> None:
    n = 4
    experts = [make_expert(name, glyph_variants=n) for name in default_expert_names()[:4]]  # text-to-image
    specs = geneval_style("test", 40, seed=1)
    clear_cache()
    nouns: set[str] = set()
    for i, spec in enumerate(specs):
        for e in experts:
            out = e(f"generate: {spec.prompt}", None, seed=i)
            nouns.update(o.noun for o in out.state.objects)
    info = cache_info()
    assert info["object_layers"] == 0  # no object drew a shape of its own
    assert 0 < info["variant_masters"] <= len(nouns) * n


def test_variant_objects_are_one_blob_in_their_box() -> None:
    from scipy import ndimage

    out = make_expert("sim/sketch", glyph_variants=8)(PROMPT, None, seed=2)
    from experts.sim.scene import Scene

    for o in out.state.objects:
        s = Scene(objects=(replace(o, color="red"),), background="plain", style="photo", quality=1.0)
        img = render(s).astype(int)
        fg = np.abs(img - render(replace(s, objects=())).astype(int)).sum(axis=2) > 0
        _, k = ndimage.label(fg, structure=np.ones((3, 3)))
        assert k == 1
        x1, y1, x2, y2 = (round(v) for v in o.box)
        ys, xs = np.nonzero(fg)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (max(x1, 0), max(y1, 0), min(x2, 128), min(y2, 128))


@pytest.mark.parametrize("bad", [-1, MAX_GLYPH_VARIANTS + 1, 2.5, True])
def test_bad_glyph_variants(bad: object) -> None:
    with pytest.raises(ValueError, match="glyph_variants"):
        make_expert("sim/sketch", glyph_variants=bad)


@pytest.mark.parametrize("bad", [-2, 1.0, True])
def test_bad_scene_object_variant(bad: object) -> None:
    with pytest.raises(ValueError, match="glyph_variant"):
        SceneObject("clock", "red", glyph_variant=bad)  # type: ignore[arg-type]


def test_noise_bank_is_opt_in_deterministic_and_gaussian() -> None:
    base = make_expert("sim/sketch")(PROMPT, None, seed=5)
    assert base.state.noise_bank is False
    e = make_expert("sim/sketch", noise_bank=True)
    a = e(PROMPT, None, seed=5)
    assert a.state.noise_bank is True
    assert a.state == replace(base.state, noise_bank=True)  # the same draws: only the noise source differs
    assert a.image.tobytes() == e(PROMPT, None, seed=5).image.tobytes()
    assert a.image.tobytes() != base.image.tobytes()
    assert render(a.state).tobytes() == a.image.tobytes()
    # the residual noise has the sigma of fresh noise: clean scene vs degraded scene
    s = replace(a.state, quality=0.5, artifacts=())
    clean = render(replace(s, quality=1.0)).astype(float)
    res = [render(replace(s, seed=k)).astype(float) - clean for k in range(2)]
    fresh = render(replace(s, noise_bank=False)).astype(float) - clean
    assert np.std(res[0]) == pytest.approx(np.std(fresh), rel=0.1)
    assert not np.array_equal(res[0], res[1])  # another seed, another window
    # an editor without the card renders the scene it edits with fresh noise again
    ed = make_expert("sim/refine")("refine: improve the details", a.image, seed=1, state=a.state)
    assert ed.state.noise_bank is False


def test_bad_noise_bank() -> None:
    with pytest.raises(ValueError, match="noise_bank"):
        make_expert("sim/sketch", noise_bank=1)
