"""Planner and decomposer: plans, revisions from feedback, termination, errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poser_env.core.commands import Command
from poser_env.core.feedback import Detection, Feedback, Holds, Verdict
from poser_env.core.grammar import parse_command_text
from poser_env.core.parser import parse
from poser_env.core.spec import Spec
from poser_env.decomposer import Decomposer, RuleDecomposer, make_decomposer
from poser_env.planner import Plan, PlanError, Planner


def fb(spec: Spec, holds: Mapping[str, Holds] | None = None, *, default: Holds = "yes",
       detections: Iterable[Detection] = ()) -> Feedback:
    """Feedback with a verdict per assertion (``default`` unless named in ``holds``)."""
    holds = dict(holds or {})
    verdicts = tuple(
        Verdict(a.id, holds.get(a.id, default), 1.0 if holds.get(a.id, default) == "yes" else 0.0, kind=a.kind)
        for a in spec.assertions()
    )
    return Feedback(verdicts, alignment=Feedback.alignment_of(verdicts), detections=tuple(detections))


def det(label: str, x: float, color: str | None = None) -> Detection:
    return Detection(label, (x, 10.0, x + 10.0, 20.0), color=color)


# ------------------------------------------------------------------------------------------ plan
def test_plan_generates_the_whole_prompt_first_and_links_every_assertion() -> None:
    spec = parse("two red clocks left of a blue dog")
    plan = Planner().plan(spec)
    first = plan.current
    assert first is not None and first.op == "generate"
    assert first.text == "generate: two red clocks left of a blue dog"
    served = {a for c in plan.pending for a in c.assertion_ids}
    assert served == {a.id for a in spec.assertions()}
    assert [c.text for c in plan.pending[1:]] == [
        "recolor: make the clocks red", "recolor: make the dog blue", "move: put the clocks left of the dog"]
    assert plan.steps == 0 and plan.done == () and plan.dropped == ()


def test_long_spec_plan_adds_groups_beyond_the_core() -> None:
    spec = parse("a red cup, a dog, a cat, a striped kite and a bowl. The bowl is under the kite. On grass.")
    plan = Planner(core_entities=2).plan(spec)
    ops = [c.op for c in plan.pending]
    assert ops[0] == "generate" and ops.count("add") == 3 and ops[-1] == "background"
    add_bowl = next(c for c in plan.pending if c.op == "add" and "bowl" in c.text)
    assert add_bowl.text == "add: a bowl under the kite" and "r0" in add_bowl.assertion_ids


def test_every_planned_and_revised_command_parses() -> None:
    prompts = pytest.importorskip("poser_env.prompts")
    planner = Planner()
    for spec in prompts.long_prompts("train", 30) + prompts.geneval_style("train", 30):  # type: ignore[attr-defined]
        plan = planner.plan(parse(spec.prompt))
        for c in plan.pending:
            parsed = parse_command_text(c.text)
            assert parsed.op == c.op
        failing = planner.revise(plan, fb(plan.spec, default="no"))
        for c in failing.pending:
            assert parse_command_text(c.text).op == c.op


def test_refine_is_optional_and_last() -> None:
    plan = Planner(refine=True).plan(parse("a cat"))
    assert plan.pending[-1].text == "refine: improve the details"
    plan = Planner().revise(plan, fb(plan.spec))
    assert [c.op for c in plan.pending] == ["refine"]  # it serves no assertion: it only goes when run
    plan = Planner().revise(plan, fb(plan.spec))
    assert plan.finished


# ------------------------------------------------------------------------------------------ revise
def test_everything_holds_pops_everything() -> None:
    p = Planner()
    plan = p.plan(parse("two red clocks left of a blue dog"))
    plan = p.revise(plan, fb(plan.spec))
    assert plan.finished and p.current(plan) is None
    assert len(plan.done) == 4 and plan.steps == 1


def test_satisfied_fixes_are_popped_and_failing_ones_remain() -> None:
    p = Planner()
    plan = p.plan(parse("two red clocks left of a blue dog"))
    plan = p.revise(plan, fb(plan.spec, {"e1.color": "no"}))
    assert [c.text for c in plan.pending] == ["recolor: make the dog blue"]


def test_recolor_rewritten_to_target_the_wrong_object() -> None:
    p = Planner()
    spec = parse("three blue clocks")
    plan = p.revise(p.plan(spec), fb(spec, {"e0.color": "no"}))
    assert plan.current is not None and plan.current.text == "recolor: make the clocks blue"
    dets = [det("clock", 80, "blue"), det("clock", 10, "blue"), det("clock", 40, "green")]
    plan = p.revise(plan, fb(spec, {"e0.color": "no"}, detections=dets))
    assert plan.current is not None and plan.current.text == "recolor: make the second clock blue"
    assert plan.current.attempts == 1
    assert parse_command_text(plan.current.text).index == 1


def test_too_many_objects_gives_remove() -> None:
    p = Planner()
    spec = parse("two clocks")
    dets = [det("clock", x) for x in (10, 40, 70)]
    plan = p.revise(p.plan(spec), fb(spec, {"e0.count": "yes", "x0": "no"}, detections=dets))
    assert [c.text for c in plan.pending] == ["remove: one clock"]


def test_missing_object_gives_add_with_its_relation() -> None:
    p = Planner()
    spec = parse("a clock and a blue dog right of the clock")
    plan = p.revise(p.plan(spec), fb(spec, {"e1.exists": "no", "e1.color": "no", "r0": "no"},
                                     detections=[det("clock", 10)]))
    assert plan.current is not None and plan.current.text == "add: a blue dog right of the clock"
    assert plan.done[0].op == "generate"  # the base scene is kept
    cmd = parse_command_text(plan.current.text)
    assert (cmd.noun, cmd.relation, cmd.reference) == ("dog", "right of", "clock")


def test_too_few_objects_gives_add_of_the_missing_ones() -> None:
    p = Planner()
    spec = parse("four red apples and a cup")
    plan = p.revise(p.plan(spec), fb(spec, {"e0.count": "no"}, detections=[det("apple", 5), det("cup", 50)]))
    assert plan.current is not None and plan.current.text == "add: three red apples"


def test_failed_relation_gives_move() -> None:
    p = Planner()
    spec = parse("a dog right of a teddy bear")
    plan = p.revise(p.plan(spec), fb(spec, {"r0": "no"}))
    assert [c.text for c in plan.pending] == ["move: put the dog right of the teddy bear"]


def test_drop_after_k_attempts() -> None:
    for k in (1, 2, 5):
        p = Planner(max_attempts=k)
        spec = parse("a red dog")
        plan = p.revise(p.plan(spec), fb(spec, {"e0.color": "no"}))  # generate done, recolor pending
        for attempt in range(1, k + 1):
            assert plan.current is not None and plan.current.op == "recolor"
            plan = p.revise(plan, fb(spec, {"e0.color": "no"}))
            if attempt < k:
                assert plan.current is not None and plan.current.attempts == attempt
        assert plan.finished and [c.op for c in plan.dropped] == ["recolor"]
        assert "e0.color" in plan.given_up


def test_generate_retried_when_nothing_usable_then_dropped() -> None:
    p = Planner(max_attempts=2)
    spec = parse("a dog")
    plan = p.plan(spec)
    plan = p.revise(plan, fb(spec, default="no"))
    assert plan.current is not None and plan.current.op == "generate" and plan.current.attempts == 1
    plan = p.revise(plan, fb(spec, default="no"))
    assert plan.finished and plan.dropped[0].op == "generate"


def test_repair_inserted_when_a_held_assertion_breaks() -> None:
    p = Planner()
    spec = parse("a red dog and a blue cat")
    plan = p.revise(p.plan(spec), fb(spec, {"e1.color": "no"}))
    assert plan.current is not None and plan.current.text == "recolor: make the cat blue"
    # the recolor fixed the cat but leaked onto the dog
    plan = p.revise(plan, fb(spec, {"e0.color": "no"}))
    assert plan.current is not None and plan.current.text == "recolor: make the dog red"
    assert dict(plan.repairs) == {"e0.color": 1} and "repair (broke)" in plan.log[-1]


def test_executed_false_counts_no_attempt() -> None:
    p = Planner()
    spec = parse("a red dog")
    plan = p.plan(spec)
    again = p.revise(plan, fb(spec, default="no"), executed=False)
    assert again.current is not None and again.current.op == "generate" and again.current.attempts == 0


def test_unknown_verdicts_never_pop() -> None:
    p = Planner()
    spec = parse("a red dog")
    plan = p.revise(p.plan(spec), fb(spec, default="unknown"), executed=False)
    assert len(plan.pending) == 2


def test_step_bound_drops_everything() -> None:
    p = Planner(max_attempts=1)
    spec = parse("a red dog")
    plan = p.plan(spec)
    assert plan.max_steps == 1 * (2 + 1 * 2) + 2 + 1
    for _ in range(plan.max_steps):
        plan = p.revise(plan, fb(spec, default="no"), executed=False)
    assert plan.finished and plan.steps == plan.max_steps


_HOLDS: st.SearchStrategy[Holds] = st.sampled_from(["yes", "no", "unknown"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([
        "two red clocks left of a blue dog",
        "a striped cup, a large dog, three cats and a bowl under the cup. No birds. On grass, in pixel art style.",
        "a photo of four handbags",
        "a small striped red cup on top of a large box. A blue dog is to the right of the box.",
    ]),
    st.integers(1, 4),
    st.data(),
)
def test_planner_terminates_for_any_feedback_sequence(prompt: str, k: int, data: st.DataObject) -> None:
    p = Planner(max_attempts=k, core_entities=2)
    spec = parse(prompt)
    plan = p.plan(spec)
    ids = [a.id for a in spec.assertions()]
    executed_bound = k * (len(plan.pending) + k * len(ids))
    for _ in range(plan.max_steps):
        if plan.finished:
            break
        verdicts: dict[str, Holds] = data.draw(st.fixed_dictionaries({a: _HOLDS for a in ids}))
        executed = data.draw(st.booleans())
        before = plan.steps
        plan = p.revise(plan, fb(spec, verdicts), executed=executed)
        assert plan.steps == before + 1
        for c in plan.pending:
            assert c.attempts < k
            assert parse_command_text(c.text).op == c.op
    assert plan.finished, "the plan must finish within max_steps revisions"
    assert plan.steps <= plan.max_steps
    assert all(n <= k for _, n in plan.repairs)
    n_commands = len(plan.done) + len(plan.dropped)
    assert n_commands <= executed_bound


@settings(max_examples=30, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["e0.count", "e0.color", "e1.exists", "e1.color", "r0", "x0"]),
                                _HOLDS), min_size=1, max_size=200))
def test_executed_revisions_finish_within_documented_bound(seq: list[dict[str, Holds]]) -> None:
    p = Planner(max_attempts=3)
    spec = parse("two red clocks left of a blue dog")
    plan = p.plan(spec)
    bound = 3 * (len(plan.pending) + 3 * len(spec.assertions()))
    steps = 0
    while not plan.finished:
        plan = p.revise(plan, fb(spec, seq[steps % len(seq)], default="no"))
        steps += 1
        assert steps <= bound


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_max_attempts(bad: object) -> None:
    with pytest.raises(PlanError, match=r"max_attempts=.* must be an int >= 1"):
        Planner(max_attempts=bad)  # type: ignore[arg-type]


def test_bad_core_entities() -> None:
    with pytest.raises(PlanError, match=r"core_entities=0 must be an int >= 1"):
        Planner(core_entities=0)


def test_plan_needs_a_spec() -> None:
    with pytest.raises(PlanError, match=r"not a poser_env.core.spec.Spec; parse the prompt first"):
        Planner().plan("a cat")  # type: ignore[arg-type]


def test_revise_needs_a_plan_and_feedback() -> None:
    p = Planner()
    plan = p.plan(parse("a cat"))
    with pytest.raises(PlanError, match=r"not a Plan; make one with Planner.plan"):
        p.revise([Command("generate", "generate: a cat")], fb(plan.spec))  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=r"not a poser_env.core.feedback.Feedback"):
        p.revise(plan, {"e0.exists": "yes"})  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=r"not a Plan"):
        p.current(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ decomposer
def test_rule_decomposer_round_trip() -> None:
    d = make_decomposer("rules", max_attempts=2)
    assert isinstance(d, RuleDecomposer) and isinstance(d, Decomposer)
    spec = d.parse("a red dog")
    plan = d.plan(spec)
    assert isinstance(plan, Plan) and d.current(plan) == plan.current
    plan = d.revise(plan, fb(spec))
    assert plan.finished and d.planner.max_attempts == 2


def test_make_decomposer_errors() -> None:
    with pytest.raises(ValueError, match=r"decomposer='rulez' is not a registered decomposer\. Did you mean 'rules'\?"):
        make_decomposer("rulez")
    with pytest.raises(ValueError, match=r"decomposer='llm:' names no model; write 'llm:<path-or-id>'"):
        make_decomposer("llm:")
    with pytest.raises(ValueError, match=r"has no parse\(\), plan\(\), revise\(\)"):
        make_decomposer(3)  # type: ignore[arg-type]


def test_make_decomposer_llm_is_lazy_and_plans_with_rules() -> None:
    pytest.importorskip("poser_env.llm")
    d = make_decomposer("llm:/nonexistent/model-dir", max_attempts=2)
    assert type(d).__name__ == "LLMDecomposer"
    assert d.rules.planner.max_attempts == 2
