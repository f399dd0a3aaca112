"""Component factories, registries, plugins, cards, typed env arguments, defaults and registered ids.

Every hostile case asserts the exact outcome: the error type and that the message names the argument, the
bad value and the fix (or the correct result).
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import poser_env
from critic.factory import CRITICS, make_critic
from experts.registry import CARDS_PATH, EXPERTS, check_sim_card, load_sim_cards, make_expert
from poser_env import config
from poser_env.components import (
    DECOMPOSERS,
    JUDGES,
    TEXT_ENCODERS,
    TimeLimitedExpert,
    generated_pool,
    make_decomposer,
    make_judge,
    make_text_encoder,
)
from poser_env.config import EnvConfigError
from poser_env.core.color import srgb_to_lab
from poser_env.core.expert import Expert, ExpertOutput
from poser_env.core.lru import LRUCache
from poser_env.core.registry import Registry, RegistryError
from poser_env.env import ImagePoserEnv

# ---------------------------------------------------------------------------------------------- typed env arguments
BAD_ENV_ARGS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"cost_weight": True}, ("cost_weight=True", "finite number")),
    ({"cost_weight": "0.1"}, ("cost_weight='0.1'", "finite number")),
    ({"cost_weight": -1}, ("cost_weight=-1", ">= 0")),
    ({"cost_weight": float("nan")}, ("cost_weight=nan",)),
    ({"invalid_action_penalty": False}, ("invalid_action_penalty=False",)),
    ({"thumbnail": "False"}, ("thumbnail='False'", "not a string", "thumbnail=False")),
    ({"feedback_in_obs": "no"}, ("feedback_in_obs='no'", "feedback_in_obs=False")),
    ({"feedback_in_obs": 1}, ("feedback_in_obs=1", "True or False")),
    ({"render_panel": "yes"}, ("render_panel='yes'", "render_panel=True")),
    ({"trust_remote_code": "true"}, ("trust_remote_code='true'",)),
    ({"max_steps": True}, ("max_steps=True", "an int from 1 to 256")),
    ({"max_steps": 16.0}, ("max_steps=16.0", "an int")),
    ({"max_steps": 0}, ("max_steps=0",)),
    ({"max_attempts": "3"}, ("max_attempts='3'",)),
    ({"thumbnail_size": True}, ("thumbnail_size=True", "pixels")),
    ({"canvas_size": 64.5}, ("canvas_size=64.5", "pixels")),
    ({"n_prompts": 0}, ("n_prompts=0", "prompts in the pool")),
    ({"n_prompts": True}, ("n_prompts=True",)),
    ({"split": "val"}, ("split='val'", "'train' or 'test'")),
    ({"prompt_source": "genevel"}, ("prompt_source='genevel'", "JSONL")),
    ({"prompt_source": []}, ("prompt_source=[]", "non-empty list")),
    ({"expert_timeout": 0}, ("expert_timeout=0", "seconds")),
    ({"expert_timeout": True}, ("expert_timeout=True",)),
    ({"expert_timeout": "5"}, ("expert_timeout='5'",)),
    ({"cards": "/no/such/cards.toml"}, ("cards='/no/such/cards.toml'", "TOML file")),
    ({"reward_weights": {"sucess": 2.0}}, ("['sucess']", "reward_weights")),
    ({"reward_weights": {"success": True}}, ("success=True",)),
    ({"render_mode": "human"}, ("render_mode='human'",)),
]


@pytest.mark.parametrize(("kwargs", "needles"), BAD_ENV_ARGS, ids=[str(i) for i in range(len(BAD_ENV_ARGS))])
def test_bad_env_arguments_are_refused_at_construction(kwargs, needles):
    with pytest.raises(EnvConfigError) as exc:
        ImagePoserEnv(**kwargs)
    for n in needles:
        assert n in str(exc.value), (n, str(exc.value))


@pytest.mark.parametrize("kwargs", [
    {"cost_weight": 0}, {"cost_weight": np.float32(0.5)}, {"max_steps": np.int64(8)}, {"thumbnail": np.bool_(True)},
    {"expert_timeout": 2.5}, {"n_prompts": 10},
])
def test_good_typed_arguments_pass(kwargs):
    env = ImagePoserEnv(**kwargs)
    env.reset(seed=0)


def test_paper_env_refuses_feedback_in_obs_instead_of_ignoring_it():
    with pytest.raises(EnvConfigError, match=r"feedback_in_obs=True: the paper's state is text only"):
        gym.make("poser_env/ImagePoserPaper-v0", feedback_in_obs=True)
    with pytest.raises(EnvConfigError, match=r"step_penalty=True"):
        gym.make("poser_env/ImagePoserPaper-v0", step_penalty=True)


# ---------------------------------------------------------------------------------------------- component names
BAD_COMPONENTS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"critic": "scen"}, ("critic name='scen'", "Did you mean 'scene'")),
    ({"critic": "vlm:"}, ("names no model", "'vlm:<path-or-id>'")),
    ({"critic": "scene:x"}, ("takes no argument",)),
    ({"judge": "detecter:owl"}, ("judge='detecter:owl'", "Did you mean 'detector:owl'")),
    ({"judge": "detector"}, ("judge='detector' names no model",)),
    ({"judge": 3}, ("judge=3",)),
    ({"decomposer": "rule"}, ("decomposer='rule'", "Did you mean 'rules'")),
    ({"decomposer": "llm:"}, ("decomposer='llm:' names no model", "llm:/models/qwen2.5-0.5b")),
    ({"decomposer": object()}, ("has no parse(), plan(), revise()",)),
]


@pytest.mark.parametrize(("kwargs", "needles"), BAD_COMPONENTS, ids=[str(i) for i in range(len(BAD_COMPONENTS))])
def test_bad_component_names_fail_at_first_reset_with_did_you_mean(kwargs, needles):
    env = ImagePoserEnv(**kwargs)
    with pytest.raises(ValueError) as exc:
        env.reset(seed=0)
    for n in needles:
        assert n in str(exc.value), (n, str(exc.value))


@pytest.mark.parametrize(("value", "needles"), [
    ("bert", ("text_encoder='bert' is not a registered text encoder", "'hashing'", "'minilm'")),
    ("hashng", ("Did you mean 'hashing'",)),
    (3, ("text_encoder=3",)),
])
def test_bad_text_encoder_fails_at_construction(value, needles):
    with pytest.raises(ValueError) as exc:
        ImagePoserEnv(text_encoder=value)
    for n in needles:
        assert n in str(exc.value)


def test_factories_build_the_registered_components():
    assert type(make_critic("scene")).__name__ == "SceneCritic"
    assert type(make_decomposer("rules", max_attempts=2)).__name__ == "RuleDecomposer"
    assert make_decomposer("rules", max_attempts=2).planner.max_attempts == 2
    assert make_text_encoder("hashing").name == "hashing"
    assert make_judge(None) is None and callable(make_judge("scene"))
    for reg, names in ((CRITICS, ["scene", "vlm", "clip"]), (JUDGES, ["scene", "detector"]),
                       (DECOMPOSERS, ["rules", "llm"]), (TEXT_ENCODERS, ["hashing", "minilm"])):
        assert reg.names() == names
    assert CRITICS.forms() == ["scene", "vlm:<path-or-id>", "clip:<path-or-id>"]


# ---------------------------------------------------------------------------------------------- registries
def test_registry_target_must_be_the_base_class():
    reg: Registry[Expert] = Registry("expert", base=Expert)
    reg.register("evil", "os:system")
    with pytest.raises(RegistryError, match=r"target='os:system' is the builtin_function_or_method .*not a subclass "
                                             r"of poser_env.core.expert.Expert"):
        reg.build("evil", "echo hi")
    reg.register("crit", "critic.scene:SceneCritic")
    with pytest.raises(RegistryError, match="class SceneCritic, not a subclass"):
        reg.build("crit")


def test_expert_registry_refuses_a_function_target():
    EXPERTS.register("test/evil", "builtins:print")
    try:
        with pytest.raises(RegistryError, match="target='builtins:print' is the builtin_function_or_method"):
            make_expert("test/evil")
    finally:
        EXPERTS._entries.pop("test/evil")


@pytest.mark.parametrize(("text", "needles"), [
    ("", ("holds no expert entry",)),
    ("card_version = 1\n", ("holds no expert entry",)),
    ('[a]\nkwargs = {cost = 1.0}\n', ("entry [a] has no 'target'",)),
    ('[a]\ntarget = "experts.sim.experts"\n', ("target='experts.sim.experts' must look like",)),
    ('[a]\ntarget = "x:Y"\nkwarg = {cost = 1.0}\n', ("unknown key(s) ['kwarg']",)),
    ('[a]\ntarget = "x:Y"\nkwargs = 3\n', ("kwargs=3 must be a table",)),
    ('[a\n', ("is not valid TOML",)),
])
def test_bad_registry_files(tmp_path, text, needles):
    p = tmp_path / "reg.toml"
    p.write_text(text)
    reg: Registry[Expert] = Registry("expert", base=Expert)
    with pytest.raises(RegistryError) as exc:
        reg.load_toml(p)
    for n in needles:
        assert n in str(exc.value)
    assert reg.names() == []  # nothing half-registered


def test_registry_file_is_all_or_nothing(tmp_path):
    p = tmp_path / "reg.toml"
    p.write_text('[good]\ntarget = "experts.sim.experts:SimTextToImage"\n\n[bad]\nkwargs = {}\n')
    reg: Registry[Expert] = Registry("expert", base=Expert)
    with pytest.raises(RegistryError, match=r"\[bad\] has no 'target'"):
        reg.load_toml(p)
    assert "good" not in reg.names()


class _EP:
    def __init__(self, name: str, value: str, fn: Any) -> None:
        self.name, self.value, self._fn = name, value, fn

    def load(self) -> Any:
        return self._fn()


def _fake_entry_points(monkeypatch, eps):
    real = metadata.entry_points

    def fake(**kw):
        return eps if kw.get("group") == "image_poser.test" else real(**kw)

    monkeypatch.setattr("poser_env.core.registry.metadata.entry_points", fake)


def _boom():
    raise ImportError("No module named 'mypkg.critics'")


@pytest.mark.parametrize(("eps", "needles"), [
    ([_EP("broken", "mypkg.critics:entries", _boom)],
     ("plugin 'broken' (entry point 'mypkg.critics:entries' in group 'image_poser.test') failed to load",
      "No module named 'mypkg.critics'", "nothing of it was registered")),
    ([_EP("half", "p:e", lambda: lambda: {"ok": {"target": "a:B"}, "no-target": {"kwargs": {}}})],
     ("plugin 'half'", "entry [no-target] has no 'target'")),
    ([_EP("list", "p:e", lambda: lambda: ["a"])], ("plugin 'list'", "returned a list")),
    ([_EP("one", "p:e", lambda: lambda: {"x": {"target": "a:B"}}),
      _EP("two", "q:e", lambda: lambda: {"x": {"target": "c:D"}})],
     ("plugin 'two'", "name='x', already registered by entry-point:one")),
    ([_EP("clash", "p:e", lambda: lambda: {"builtin": {"target": "a:B"}})],
     ("plugin 'clash'", "name='builtin', already registered by code")),
])
def test_plugin_errors_name_the_plugin_and_register_nothing(monkeypatch, eps, needles):
    _fake_entry_points(monkeypatch, eps)
    reg: Registry[Any] = Registry("thing", entry_point_group="image_poser.test")
    reg.register("builtin", "a:B")
    for _ in range(2):  # not skipped silently on the second read either
        with pytest.raises(RegistryError) as exc:
            reg.names()
        for n in needles:
            assert n in str(exc.value), (n, str(exc.value))
    assert list(reg._entries) == ["builtin"]


def test_good_plugin_registers(monkeypatch):
    _fake_entry_points(monkeypatch, [_EP("good", "p:e", lambda: lambda: {"mine": {"target": "a:B"}})])
    reg: Registry[Any] = Registry("thing", entry_point_group="image_poser.test")
    assert reg.names() == ["mine"] and reg.entry("mine").source == "entry-point:good"


# ---------------------------------------------------------------------------------------------- SceneSim cards
_T2I = dict(EXPERTS.entry("sim/sketch").kwargs)


def _card_file(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> Path:
    def val(v: Any) -> str:
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v).lower() if isinstance(v, bool) else repr(v)

    body = "\n".join(f"{k} = {val(v)}" for k, v in kwargs.items())
    p = tmp_path / "cards.toml"
    p.write_text(f'card_version = 1\n["{name}"]\ntarget = "experts.sim.experts:SimTextToImage"\n'
                 f'["{name}".kwargs]\n{body}\n')
    return p


@pytest.mark.parametrize("missing", ["count_accuracy", "cost", "ops", "fidelity", "relation_accuracy"])
def test_card_without_a_required_field_is_an_error_naming_field_and_file(tmp_path, missing):
    p = _card_file(tmp_path, "my/t2i", {k: v for k, v in _T2I.items() if k != missing})
    with pytest.raises(RegistryError) as exc:
        load_sim_cards(p)
    assert missing in str(exc.value) and str(p) in str(exc.value) and "[my/t2i]" in str(exc.value)


def test_ops_as_a_string_names_the_field(tmp_path):
    p = _card_file(tmp_path, "my/t2i", {**_T2I, "ops": "generate"})
    with pytest.raises(RegistryError, match=r"ops='generate' must be a non-empty list of op names, e.g. "
                                             r"ops = \['generate'\]"):
        load_sim_cards(p)
    with pytest.raises(RegistryError, match=r"ops='generate' must be a list"):
        make_expert("sim/sketch", ops="generate")
    with pytest.raises(RegistryError, match=r"ops entries \['paint'\] are not ops"):
        check_sim_card("x", {**_T2I, "ops": ["paint"]}, "here")


def test_shipped_cards_meet_the_required_fields():
    for name in load_sim_cards(CARDS_PATH).names():
        check_sim_card(name, EXPERTS.entry(name).kwargs, str(CARDS_PATH))


def test_custom_cards_apply_to_one_env_only(tmp_path):
    p = _card_file(tmp_path, "my/t2i", {**_T2I, "cost": 7.0})
    env = gym.make("poser_env/ImagePoser-v0", cards=str(p), experts=["my/t2i", "sim/recolor"])
    env.reset(seed=0)
    assert [e.cost for e in env.unwrapped.experts] == [7.0, EXPERTS.entry("sim/recolor").kwargs["cost"]]
    assert "my/t2i" not in EXPERTS  # not process-wide
    assert gym.make("poser_env/ImagePoser-v0", cards=str(p)).unwrapped.expert_names[-1] == "my/t2i"
    with pytest.raises(RegistryError, match="unknown expert name='my/t2i'"):
        e2 = gym.make("poser_env/ImagePoser-v0", experts=["my/t2i"])
        e2.reset(seed=0)


# ---------------------------------------------------------------------------------------------- trust_remote_code
def test_registry_trust_remote_code_needs_the_env_argument(tmp_path):
    pytest.importorskip("experts.diffusers")
    p = tmp_path / "reg.toml"
    p.write_text('[remote]\ntarget = "experts.diffusers.expert:DiffusersExpert"\n'
                 'kwargs = { model = "x/y", task = "text-to-image", load_kwargs = { trust_remote_code = true } }\n')
    with pytest.raises(EnvConfigError, match=r"\[remote\] in .* sets load_kwargs.trust_remote_code = true.*pass "
                                             r"trust_remote_code=True to the env"):
        gym.make("poser_env/ImagePoserDiffusers-v0", registry=str(p))
    env = gym.make("poser_env/ImagePoserDiffusers-v0", registry=str(p), trust_remote_code=True)
    assert env.unwrapped.expert_names == ["remote"]


# ---------------------------------------------------------------------------------------------- expert timeout
class _Slow(Expert):
    name = "slow"
    kind = "text-to-image"
    cost = 1.0

    def __init__(self, inner: Expert, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.ops = inner.ops

    def _generate(self, command: str, image: Any, *, seed: int, state: Any, detections: Any,
                  **params: Any) -> ExpertOutput:
        time.sleep(self.delay)
        return self.inner(command, image, seed=seed, state=state, detections=detections)


def test_expert_timeout_is_reported_in_info_error():
    slow = _Slow(make_expert("sim/layout"), 5.0)
    env = gym.make("poser_env/ImagePoser-v0", experts=[slow], expert_timeout=0.2)
    env.reset(seed=0)
    assert isinstance(env.unwrapped.experts[0], TimeLimitedExpert)
    t0 = time.perf_counter()
    _, _, term, trunc, info = env.step(0)
    assert time.perf_counter() - t0 < 2.0
    assert "did not return within expert_timeout=0.2 s" in info["error"] and "slow" in info["error"]
    assert env.unwrapped.canvas is None and not term


def test_expert_timeout_does_not_change_results():
    runs = []
    for timeout in (None, 30.0):
        env = gym.make("poser_env/ImagePoser-v0", expert_timeout=timeout)
        env.reset(seed=3)
        rewards = []
        for a in (1, 0, 4):
            _, r, term, trunc, _ = env.step(a)
            rewards.append(float(r))
            if term or trunc:
                break
        runs.append(rewards)
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------------------------- defaults and ids
def test_registered_ids_are_deterministic_and_name_their_encoder():
    for env_id in poser_env.ENV_IDS:
        kw = gym.spec(env_id).kwargs
        assert kw["text_encoder"] == ("minilm" if "MiniLM" in env_id else "hashing"), env_id
    assert gym.make("poser_env/ImagePoser-v0").unwrapped.encoder.name == "hashing"


def test_main_id_is_the_headline_configuration():
    assert poser_env.MAIN_ENV_ID == "poser_env/ImagePoserMain-v1"
    kw = gym.spec(poser_env.MAIN_ENV_ID).kwargs
    assert kw == {"prompt_source": "mixed", "cost_weight": 0.005, "reward_weights": {"success": 2.0},
                  "text_encoder": "hashing", "cards": "v2", "action_mode": "factored"}
    assert gym.spec(poser_env.MAIN_ENV_ID).max_episode_steps == 30  # the one step budget is the TimeLimit
    u = gym.make(poser_env.MAIN_ENV_ID).unwrapped
    assert (u.max_steps, u.cost_weight, u.reward_weights.success, u.prompt_source) == (30, 0.005, 2.0, "mixed")
    assert (u.action_mode, u.command_slots, u.n_experts) == ("factored", 4, 14)
    v0 = "poser_env/ImagePoserMain-v0"
    assert gym.spec(v0).kwargs == {"prompt_source": "mixed", "cost_weight": 0.005, "reward_weights": {"success": 2.0},
                                   "text_encoder": "hashing"}
    # the v0 main world is the old ImagePoser-v0 + MAIN_ENV_KWARGS: same observations and rewards
    old = gym.make("poser_env/ImagePoser-v0", prompt_source="mixed", max_steps=30, text_encoder="hashing",
                   cost_weight=0.005, reward_weights={"success": 2.0})
    new = gym.make(v0)
    for e in (old, new):
        e.reset(seed=11)
    for a in (2, 0, 5, 11):
        o1, r1, t1, tr1, _ = old.step(a)
        o2, r2, t2, tr2, _ = new.step(a)
        assert r1 == r2 and (t1, tr1) == (t2, tr2) and all(np.array_equal(o1[k], o2[k]) for k in o1)
        if t1 or tr1:
            break


def test_defaults_have_one_home():
    import inspect

    sig = inspect.signature(ImagePoserEnv)
    for f in ("max_steps", "cost_weight", "max_attempts", "text_encoder", "critic", "canvas_size"):
        assert sig.parameters[f].default == getattr(config.ENV_DEFAULTS, f)
    assert (config.LONG.max_steps, config.PAPER.max_steps, config.MAIN.max_steps) == (24, 6, 30)
    assert (config.PAPER.cost_weight, config.MAIN.cost_weight) == (0.0, 0.005)
    assert gym.make("poser_env/ImagePoserPaper-v0").unwrapped.max_steps == 6


def test_mixed_pool_means_the_same_everywhere():
    from agents.pipeline import load_prompts
    from poser_env.prompts import PromptSource, geneval_style, long_prompts

    pool = generated_pool("mixed", "test", 8)
    assert [s.prompt for s in pool] == [s.prompt for s in geneval_style("test", 4) + long_prompts("test", 4)]
    assert [s.prompt for s in load_prompts(poser_env.MAIN_ENV_ID, split="test", n=8)] == [s.prompt for s in pool]
    assert [s.prompt for s in PromptSource("mixed", "test", 8).pool] == [s.prompt for s in pool]


# ---------------------------------------------------------------------------------------------- small pieces
def test_lru_cache():
    c: LRUCache[str, int] = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)  # drops b, the least recent
    assert "b" not in c and c.get("c") == 3 and len(c) == 2
    assert (c.hits, c.misses) == (2, 0)
    assert c.get("zz") is None and c.misses == 1
    off: LRUCache[str, int] = LRUCache(0)
    off.put("a", 1)
    assert len(off) == 0
    with pytest.raises(ValueError, match="cache_size=-1"):
        LRUCache(-1)


@pytest.mark.parametrize(("rgb", "lab"), [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
    ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
    ((128, 128, 128), (53.5850, 0.0, 0.0)),
])
def test_srgb_to_lab_known_values(rgb, lab):
    np.testing.assert_allclose(srgb_to_lab(np.array(rgb)), lab, atol=2e-3)


def test_srgb_to_lab_shape_error():
    with pytest.raises(ValueError, match=r"shape \(4,\) must have a last axis of 3"):
        srgb_to_lab(np.zeros(4))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# ---------------------------------------------------------------------------------------------- vector env workers
def test_subproc_vec_env_worker_error_surfaces_with_its_cause():
    from agents.algos import VecEnvWorkerError, make_vec_env

    venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=2, vec_cls="subproc")
    try:
        venv.reset()
        with pytest.raises(VecEnvWorkerError, match=r"(?s)worker failed \(EOFError\).*step\(.*99\).*"
                                                    r"action=np.int64\(99\) is outside Discrete\(12\)"):
            venv.step(np.array([99, 99]))
    finally:
        venv.close()
    with pytest.raises(VecEnvWorkerError, match=r"(?s)while starting.*cost_weight=True \(bool\) must be a finite"):
        make_vec_env("poser_env/ImagePoser-v0", n_envs=1, vec_cls="subproc", env_kwargs={"cost_weight": True})


def test_gymnasium_async_vector_env_forwards_the_cause():
    venv = gym.vector.AsyncVectorEnv([lambda: gym.make("poser_env/ImagePoser-v0")] * 2)
    try:
        venv.reset(seed=0)
        with pytest.raises(ValueError, match=r"action=.*99.* is outside Discrete\(12\)"):
            venv.step(np.array([99, 99]))
    finally:
        venv.close(terminate=True)
