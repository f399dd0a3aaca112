"""SceneSim experts (experts.sim.experts) and their registry (experts.registry)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from experts.registry import (
    CARD_VERSION,
    CARDS_PATH,
    EXPERTS,
    SIM_EXPERT_NAMES,
    default_expert_names,
    default_sim_experts,
    make_expert,
    model_card_table,
)
from experts.sim.experts import GAP, SimEditor, SimTextToImage
from experts.sim.judge import SceneJudge, is_pass
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.expert import Expert
from poser_env.core.geometry import SIZE_FRACTION
from poser_env.core.parser import parse
from poser_env.core.registry import RegistryError

ROOT = Path(__file__).resolve().parents[1]
judge = SceneJudge()
T2I = ("sim/sketch", "sim/layout", "sim/photoreal", "sim/dense")


def base_scene() -> Scene:
    return Scene(objects=(
        SceneObject("clock", "red", box=(10, 50, 32, 72)),
        SceneObject("clock", "red", box=(40, 50, 62, 72)),
        SceneObject("dog", "blue", box=(90, 50, 112, 72)),
    ), quality=0.9, seed=1)


def check_layout(scene: Scene) -> None:
    boxes = np.array([o.box for o in scene.objects])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= scene.width).all() and (boxes[:, 3] <= scene.height).all()
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            apart = a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]
            assert apart, (scene.objects[i], scene.objects[j])
    canvas = min(scene.width, scene.height)
    for o in scene.objects:
        w, h = o.box[2] - o.box[0], o.box[3] - o.box[1]
        lo, hi = 0.9 * SIZE_FRACTION[o.size] * canvas, 1.1 * SIZE_FRACTION[o.size] * canvas
        assert lo - 1e-9 <= w <= hi + 1e-9 and lo - 1e-9 <= h <= hi + 1e-9


# ---------------------------------------------------------------- registry and cards
def test_registry_order_and_kinds() -> None:
    experts = default_sim_experts()
    assert [e.name for e in experts] == list(SIM_EXPERT_NAMES) == list(default_expert_names())
    kinds = [e.kind for e in experts]
    n_t2i = kinds.count("text-to-image")
    assert n_t2i >= 4 and kinds[:n_t2i] == ["text-to-image"] * n_t2i  # T2I first
    editors = experts[n_t2i:]
    assert len(editors) >= 6 and all(isinstance(e, SimEditor) for e in editors)
    ops = set().union(*(e.ops for e in editors))
    assert ops >= {"add", "remove", "recolor", "retexture", "move", "resize", "background", "restyle", "refine"}
    assert all(isinstance(e, Expert) and e.cost > 0 for e in experts)
    assert min(e.cost for e in experts if e.kind == "text-to-image") == 1.0


def test_cards_have_every_field() -> None:
    data = tomllib.loads(CARDS_PATH.read_text())
    assert data["card_version"] == CARD_VERSION >= 1
    for name in SIM_EXPERT_NAMES:
        entry = EXPERTS.entry(name)
        assert entry.card["card_version"] == CARD_VERSION
        assert {"analogue", "summary", "aesthetic"} <= set(entry.card)
        assert {"cost", "ops", "artifacts", "fidelity"} <= set(entry.kwargs)
    table = model_card_table()
    assert all(f"`{n}`" in table for n in SIM_EXPERT_NAMES) and "colour binding (decay)" in table


def test_make_expert_overrides_and_errors() -> None:
    e = make_expert("sim/layout", canvas_size=64, color_binding=1.0)
    assert e.profile.color_binding == 1.0 and e.canvas_size == 64 and e.card["analogue"]
    with pytest.raises(RegistryError, match="Did you mean 'sim/layout'"):
        make_expert("sim/layuot")
    with pytest.raises(ValueError, match=r"color_binding=1\.5"):
        make_expert("sim/layout", color_binding=1.5)
    with pytest.raises(ValueError, match="canvas_size=32"):
        make_expert("sim/layout", canvas_size=32)
    with pytest.raises(ValueError, match="unknown card parameter"):
        make_expert("sim/layout", colour_binding=0.5)
    with pytest.raises(ValueError, match="ops entry 'paint'"):
        SimTextToImage("x", ops=("paint",))
    with pytest.raises(ValueError, match="max_entities=0"):
        SimTextToImage("x", max_entities=0)


# ---------------------------------------------------------------- text-to-image
@pytest.mark.parametrize("name", T2I)
def test_t2i_output_and_layout(name: str) -> None:
    e = make_expert(name)
    prompt = "generate: two red clocks left of a blue dog, a small striped cup and three large books"
    for seed in range(8):
        out = e(prompt, seed=seed)
        assert out.image.shape == (128, 128, 3) and out.image.dtype == np.uint8
        assert isinstance(out.state, Scene) and out.seed == seed and out.metadata["expert"] == name
        check_layout(out.state)
    big = make_expert(name, canvas_size=256)("generate: a cup", seed=0)
    assert big.image.shape == (256, 256, 3)


def test_same_seed_same_image_other_seed_other_image() -> None:
    e = make_expert("sim/dense")
    a = e("generate: two red clocks left of a blue dog", seed=5)
    b = e("generate: two red clocks left of a blue dog", seed=5)
    c = e("generate: two red clocks left of a blue dog", seed=6)
    assert a.state == b.state and np.array_equal(a.image, b.image)
    assert a.state != c.state


def _pass_rate(name: str, prompt: str, n: int = 40, **over: object) -> float:
    e = make_expert(name, **over)
    spec = parse(prompt)
    return float(np.mean([is_pass(judge(e("generate: " + prompt, seed=s).state, spec)) for s in range(n)]))


def test_cards_shape_behaviour() -> None:
    # layout: counts and positions; photoreal: colours; sketch: cheap but loose
    count = {n: _pass_rate(n, "a photo of four clocks") for n in T2I}
    assert count["sim/layout"] > 0.8 > 0.5 > count["sim/sketch"]
    assert count["sim/photoreal"] < 0.5
    pos = {n: _pass_rate(n, "a photo of a dog right of a teddy bear") for n in T2I}
    assert pos["sim/layout"] > 0.8 and pos["sim/layout"] > pos["sim/photoreal"] + 0.2
    col = {n: _pass_rate(n, "a photo of a purple wine glass") for n in T2I}
    assert col["sim/photoreal"] > 0.7 > 0.5 > col["sim/layout"]
    col2 = _pass_rate("sim/photoreal", "a photo of a purple wine glass and a black apple")
    assert col["sim/photoreal"] - 0.2 > col2 > _pass_rate("sim/layout", "a photo of a purple wine glass and a black apple")
    # a perfect card passes everything; no expert is best at everything
    assert _pass_rate("sim/layout", "a photo of a purple wine glass and a black apple", 10, color_binding=1.0,
                      binding_decay=0.0, entity_drop=0.0) == 1.0
    best = {t: max(T2I, key=d.__getitem__) for t, d in (("count", count), ("pos", pos), ("col", col))}
    assert len(set(best.values())) > 1


def test_dense_reads_many_entities_others_cap_them() -> None:
    prompt = ("generate: a cup, a dog, a cat, a book, a clock, a vase, a kite and a bench")
    n_dense = np.mean([len(make_expert("sim/dense")(prompt, seed=s).state.objects) for s in range(10)])
    n_sketch = np.mean([len(make_expert("sim/sketch")(prompt, seed=s).state.objects) for s in range(10)])
    assert n_dense > 6 > 4 > n_sketch


def test_background_and_style() -> None:
    e = make_expert("sim/photoreal", scene_accuracy=1.0)
    s = e("generate: a watercolor of a cup on a wooden table", seed=0).state
    assert (s.background, s.style) == ("wooden table", "watercolor")
    assert make_expert("sim/sketch")("generate: a cup", seed=0).state.style == "sketch"  # its default style


# ---------------------------------------------------------------- editors
def edit(name: str, command: str, scene: Scene | None = None, seed: int = 0, **over: object) -> Scene:
    scene = scene or base_scene()
    e = make_expert(name, **over)
    img = np.zeros((scene.height, scene.width, 3), np.uint8)
    out = e(command, img, seed=seed, state=scene)
    assert out.image.shape == img.shape and isinstance(out.state, Scene)
    check_layout(out.state)
    return out.state


def test_recolor_targets_ordinal_and_leaks() -> None:
    s = edit("sim/recolor", "recolor: make the second clock blue", edit_accuracy=1.0, attribute_leakage=0.0)
    assert [o.color for o in s.objects] == ["red", "blue", "blue"]
    s = edit("sim/recolor", "recolor: make the first clock green", edit_accuracy=1.0, attribute_leakage=1.0)
    assert [o.color for o in s.objects] == ["green", "green", "blue"]  # leaked to its nearest neighbour
    s = edit("sim/recolor", "recolor: make the last clock green", edit_accuracy=1.0, attribute_leakage=0.0)
    assert [o.color for o in s.objects] == ["red", "green", "blue"]
    s = edit("sim/recolor", "recolor: make the clocks yellow", edit_accuracy=0.0, attribute_leakage=0.0)
    assert [o.color for o in s.objects] == ["red", "red", "blue"]  # failed edit


def test_retexture_resize_remove() -> None:
    s = edit("sim/retexture", "retexture: make the clocks striped", edit_accuracy=1.0, attribute_leakage=0.0)
    assert [o.pattern for o in s.objects] == ["striped", "striped", "plain"]
    s = edit("sim/move", "resize: make the dog large", edit_accuracy=1.0)
    assert s.objects[2].size == "large"
    s = edit("sim/remove", "remove: the dog", edit_accuracy=1.0)
    assert [o.noun for o in s.objects] == ["clock", "clock"]
    s = edit("sim/remove", "remove: one clock", edit_accuracy=1.0)
    assert [o.noun for o in s.objects] == ["clock", "dog"]


def test_add_and_move_honour_relations() -> None:
    spec = parse("a cat above a dog")
    for seed in range(5):
        s = edit("sim/add", "add: a cat above the dog", seed=seed, relation_accuracy=1.0, count_accuracy=1.0)
        assert [o.noun for o in s.objects].count("cat") == 1
        assert judge(s, spec).verdict("r0").ok
    spec = parse("a dog above two clocks")  # above both clocks
    for seed in range(5):
        s = edit("sim/move", "move: put the dog above the clocks", seed=seed, relation_accuracy=1.0)
        assert judge(s, spec).verdict("r0").ok
    moved = edit("sim/move", "move: put the dog above the clocks", relation_accuracy=0.0)
    assert moved.objects[2].box != base_scene().objects[2].box  # moved, somewhere


def test_background_restyle_refine_and_artifacts() -> None:
    s = edit("sim/restyle", "background: change the background to grass", edit_accuracy=1.0, drift=0.0)
    assert s.background == "grass"
    s = edit("sim/restyle", "restyle: make it pixel art", edit_accuracy=1.0, drift=0.0)
    assert s.style == "pixel art"
    dirty = Scene(objects=base_scene().objects, quality=0.6,
                  artifacts=tuple(Artifact(10.0 * k, 10.0, 4.0, 0.8) for k in range(5)))
    s = edit("sim/refine", "refine: improve the details", dirty, artifact_removal=1.0, drift=0.0)
    assert s.artifacts == () and s.quality > 0.9 and s.objects == dirty.objects
    assert judge(s, parse("a dog")).fidelity > judge(dirty, parse("a dog")).fidelity
    s = edit("sim/recolor", "recolor: make the dog green", artifacts=6.0)
    assert len(s.artifacts) > 0 and judge(s, parse("a dog")).fidelity < 0.9


def test_drift_changes_a_detail() -> None:
    s = edit("sim/refine", "refine: improve the details", drift=1.0)
    assert s.objects != base_scene().objects and [o.noun for o in s.objects] == ["clock", "clock", "dog"]


def test_editor_errors() -> None:
    e = make_expert("sim/recolor")
    img = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="state=None is not a SceneSim Scene"):
        e("recolor: make the dog green", img, seed=0)
    with pytest.raises(ValueError, match="image=None"):
        e("recolor: make the dog green", seed=0, state=base_scene())
    with pytest.raises(ValueError, match="op 'add'"):
        e("add: a cat", img, seed=0, state=base_scene())
    with pytest.raises(ValueError, match="op 'recolor'"):
        make_expert("sim/layout")("recolor: make the dog green", seed=0)
    with pytest.raises(ValueError, match="seed=-1"):
        make_expert("sim/layout")("a cup", seed=-1)


# ---------------------------------------------------------------- determinism across processes
_SCRIPT = """
import hashlib, numpy as np
from experts.registry import make_expert
out = make_expert("sim/dense")("generate: two red clocks left of a blue dog and a striped cup", seed=11)
ed = make_expert("sim/recolor")("recolor: make the second clock blue", out.image, seed=3, state=out.state)
print(hashlib.sha256(out.image.tobytes()).hexdigest(), hashlib.sha256(ed.image.tobytes()).hexdigest())
"""


def test_byte_identical_across_processes() -> None:
    env = {"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                           check=True).stdout.split() for _ in range(2)]
    env["PYTHONHASHSEED"] = "7"
    runs.append(subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                               check=True).stdout.split())
    out = make_expert("sim/dense")("generate: two red clocks left of a blue dog and a striped cup", seed=11)
    ed = make_expert("sim/recolor")("recolor: make the second clock blue", out.image, seed=3, state=out.state)
    here = [hashlib.sha256(out.image.tobytes()).hexdigest(), hashlib.sha256(ed.image.tobytes()).hexdigest()]
    assert runs[0] == runs[1] == runs[2] == here
