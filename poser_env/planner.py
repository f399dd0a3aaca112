"""Reflective planner: spec -> ordered commands, revised from the critic's feedback after every step.

A :class:`Plan` is an immutable checklist of :class:`~poser_env.core.commands.Command` objects, each linked
(``assertion_ids``) to the spec assertions it serves:

1. ``generate`` the base scene: the whole prompt for small specs, a core description (the first
   ``core_entities`` groups, their relations, background and style) for long ones;
2. ``add`` each group the core description left out (with its relation to a group already there);
3. one fix per attribute or relation: ``recolor``/``retexture``/``resize``/``move``;
4. ``background`` and ``restyle``; 5. optionally ``refine``.

Commands whose assertions already hold are popped without running, so after a good ``generate`` most
fixes vanish. :meth:`Planner.revise` reads a :class:`~poser_env.core.feedback.Feedback`:

* the command that just ran is *done* when the assertions it alone serves hold; otherwise it is
  rewritten from the verdicts and detections ("recolor: make the second clock blue", "remove: one
  clock", "add: a blue dog right of the clock") and kept in front, or *dropped* after ``max_attempts``
  executions (its failing assertions are then given up);
* pending commands whose assertions all hold are popped;
* an assertion that fails and no pending command serves (it held and broke) gets a repair command in
  front, at most ``max_attempts`` repairs per assertion.

**Termination.** Every command runs at most ``max_attempts`` (K) times; at most K repairs are created
per assertion; rewrites keep their attempt count. So with ``executed=True`` a plan of ``c`` initial
commands for ``a`` assertions finishes after at most ``K * (c + K * a)`` revisions. As a hard bound for
any call sequence (including ``executed=False``), :attr:`Plan.max_steps` = ``K * (c + K * a) + a + 1``
revisions: at that point every pending command is dropped and :meth:`Planner.current` returns None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from poser_env.core.commands import Command
from poser_env.core.feedback import Detection, Feedback
from poser_env.core.spec import Assertion, Entity, Spec
from poser_env.core.text import noun_phrase, number_word, plural

__all__ = ["Plan", "PlanError", "Planner", "fix_command"]

_ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "on top of": "under", "under": "on top of", "next to": "next to"}
_BG_PHRASE = {"plain": "a plain background", "sky": "the sky", "grass": "grass", "wooden table": "a wooden table",
              "night": "night", "sand": "sand"}
_STYLE_PHRASE = {"photo": "a photo", "watercolor": "a watercolor", "sketch": "a sketch", "pixel art": "pixel art"}


class PlanError(ValueError):
    """Bad arguments to the planner (the message names the argument and the fix)."""


@dataclass(frozen=True)
class Plan:
    """An immutable plan; :meth:`Planner.revise` returns a new one.

    Attributes:
        spec: The spec the plan serves.
        pending: Commands still to run, the current one first.
        done: Commands finished (ran and succeeded, or popped because their assertions already held).
        dropped: Commands given up after ``max_attempts`` executions, or cut by the ``max_steps`` bound.
        steps: Number of revisions so far (0 for a fresh plan).
        max_steps: Hard bound on revisions; when ``steps`` reaches it every pending command is dropped.
        held: Ids of the assertions that held at the last feedback.
        repairs: ``(assertion_id, n)`` pairs: repair commands inserted so far per assertion.
        given_up: Ids of assertions whose command was dropped (never repaired again).
        log: One human-readable line per revision (what happened and why).
    """

    spec: Spec
    pending: tuple[Command, ...]
    done: tuple[Command, ...] = ()
    dropped: tuple[Command, ...] = ()
    steps: int = 0
    max_steps: int = 1
    held: frozenset[str] = frozenset()
    repairs: tuple[tuple[str, int], ...] = ()
    given_up: frozenset[str] = frozenset()
    log: tuple[str, ...] = field(default=(), compare=False)

    @property
    def current(self) -> Command | None:
        """The command to run now, or None when the plan is finished."""
        return self.pending[0] if self.pending else None

    @property
    def finished(self) -> bool:
        """True when nothing is pending."""
        return not self.pending

    @property
    def texts(self) -> list[str]:
        """Pending command texts (for humans)."""
        return [c.text for c in self.pending]

    def promote(self, index: int) -> Plan:
        """This plan with ``pending[index]`` moved to the front (the others keep their order): the command the
        agent chose to run next (factored action mode). ``promote(0)`` returns the plan itself.

        Raises:
            PlanError: ``index`` is not an int in ``[0, len(pending))``.
        """
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.pending):
            raise PlanError(
                f"index={index!r} must be an int in [0, {len(self.pending)}) (a pending command of this plan).")
        if index == 0:
            return self
        p = self.pending
        return replace(self, pending=(p[index], *p[:index], *p[index + 1:]),
                       log=(*self.log, f"chose: {p[index].text}"))


def _who(e: Entity) -> str:
    return f"the {plural(e.noun) if e.count > 1 else e.noun}"


def _describe(spec: Spec, keep: Sequence[int]) -> str:
    """English description of the groups ``keep`` (their relations among them), background and style."""
    keep_set = set(keep)
    parts = [spec.entities[i].phrase() for i in keep]
    text = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else ""
    rels = [r for r in spec.relations if r.subject in keep_set and r.reference in keep_set]
    sentences = [text] if text else []
    for r in rels:
        s, o = spec.entities[r.subject], spec.entities[r.reference]
        be = "are" if s.count > 1 else "is"
        sentences.append(f"{_who(s)} {be} {r.relation} {_who(o)}")
    out = ". ".join(sentences)
    if spec.background is not None:
        bg = f"with {_BG_PHRASE[spec.background]} background" if spec.background == "plain" else (
            f"with a {spec.background} background")
        out = f"{out}, {bg}" if out else f"a scene {bg}"
    if spec.style is not None:
        out = f"{out}, in {spec.style} style"
    return out


class Planner:
    """Turns specs into plans and revises them from feedback.

    Args:
        max_attempts: K, executions of one command before it is dropped (>= 1; default 3). Also the most
            repair commands per assertion.
        core_entities: How many groups the first ``generate`` describes when the spec is long (>= 1);
            the rest are added one ``add`` at a time. Specs with at most this many groups are generated
            from their whole prompt.
        refine: Append a ``refine`` command (no assertions; done once run).

    Raises:
        PlanError: a bad argument (named in the message).
    """

    def __init__(self, max_attempts: int = 3, *, core_entities: int = 4, refine: bool = False) -> None:
        for name, v in (("max_attempts", max_attempts), ("core_entities", core_entities)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PlanError(f"{name}={v!r} must be an int >= 1, e.g. {name}=3.")
        self.max_attempts = max_attempts
        self.core_entities = core_entities
        self.refine = bool(refine)

    def __repr__(self) -> str:
        return f"Planner(max_attempts={self.max_attempts}, core_entities={self.core_entities}, refine={self.refine})"

    # ----------------------------------------------------------------------------------- plan
    def plan(self, spec: Spec) -> Plan:
        """The initial plan for ``spec`` (see the module docstring for the order of commands).

        Raises:
            PlanError: ``spec`` is not a :class:`~poser_env.core.spec.Spec`.
        """
        if not isinstance(spec, Spec):
            raise PlanError(
                f"spec={spec!r} is a {type(spec).__name__}, not a poser_env.core.spec.Spec; parse the prompt first "
                "(poser_env.core.parser.parse(prompt))."
            )
        asserts = spec.assertions()
        ents = spec.entities
        n = len(ents)
        core = list(range(min(n, self.core_entities)))
        whole = n <= self.core_entities
        cmds: list[Command] = []
        core_ids = [a.id for a in asserts if _in_core(a, set(core)) or a.kind in ("exclusion", "background", "style")]
        if whole:
            gen_text = spec.prompt.strip() or _describe(spec, core)
        else:
            gen_text = _describe(spec, core)
        cmds.append(Command("generate", f"generate: {gen_text}", tuple(core_ids), target=None))
        present = set(core)
        for i in range(len(core), n):
            e = ents[i]
            ids = [a.id for a in asserts if a.entity == i and a.kind in ("exists", "count", "color", "pattern", "size")]
            text = f"add: {e.phrase()}"
            for j, r in enumerate(spec.relations):
                if r.subject == i and r.reference in present:
                    text += f" {r.relation} {_who(ents[r.reference])}"
                    ids.append(f"r{j}")
                    break
                if r.reference == i and r.subject in present:
                    text += f" {_INVERSE[r.relation]} {_who(ents[r.subject])}"
                    ids.append(f"r{j}")
                    break
            present.add(i)
            cmds.append(Command("add", text, tuple(ids), target=i))
        for a in asserts:
            c = fix_command(spec, a, None)
            if c is not None and a.kind not in ("exists", "count", "exclusion"):
                cmds.append(c)
        # order: generate, adds, attribute fixes, moves, background, restyle
        rank = {"generate": 0, "add": 1, "recolor": 2, "retexture": 2, "resize": 2, "move": 3, "remove": 3,
                "background": 4, "restyle": 5}
        cmds.sort(key=lambda c: rank.get(c.op, 6))
        if self.refine:
            cmds.append(Command("refine", "refine: improve the details"))
        k = self.max_attempts
        bound = k * (len(cmds) + k * len(asserts)) + len(asserts) + 1
        return Plan(spec=spec, pending=tuple(cmds), max_steps=bound,
                    log=(f"planned {len(cmds)} commands for {len(asserts)} assertions",))

    def current(self, plan: Plan) -> Command | None:
        """The command to run now, or None when ``plan`` is finished."""
        if not isinstance(plan, Plan):
            raise PlanError(f"plan={plan!r} is a {type(plan).__name__}, not a Plan; make one with Planner.plan(spec).")
        return plan.current

    # --------------------------------------------------------------------------------- revise
    def revise(self, plan: Plan, feedback: Feedback, *, executed: bool = True) -> Plan:
        """The plan revised from ``feedback`` on the latest image.

        Args:
            plan: The plan before the step.
            feedback: The critic's feedback on the image the current command produced.
            executed: True when the current command just ran (counts one attempt); False to only
                re-read feedback (pop satisfied commands, insert repairs) without charging an attempt.

        Raises:
            PlanError: ``plan`` or ``feedback`` of the wrong type.
        """
        if not isinstance(plan, Plan):
            raise PlanError(f"plan={plan!r} is a {type(plan).__name__}, not a Plan; make one with Planner.plan(spec).")
        if not isinstance(feedback, Feedback):
            raise PlanError(
                f"feedback={feedback!r} is a {type(feedback).__name__}, not a poser_env.core.feedback.Feedback; pass the "
                "critic's output for the latest image."
            )
        spec = plan.spec
        status = {v.assertion_id: v.holds for v in feedback.verdicts}
        yes = {a for a, h in status.items() if h == "yes"}
        no = {a for a, h in status.items() if h == "no"}
        pending = list(plan.pending)
        done = list(plan.done)
        dropped = list(plan.dropped)
        repairs = dict(plan.repairs)
        given_up = set(plan.given_up)
        notes: list[str] = []
        steps = plan.steps + 1
        k = self.max_attempts

        if steps >= plan.max_steps and pending:
            notes.append(f"step bound {plan.max_steps} reached: dropped {len(pending)} commands")
            dropped += pending
            for c in pending:
                given_up.update(c.assertion_ids)
            pending = []

        if executed and pending:
            cur = pending.pop(0).tried()
            later = {a for c in pending for a in c.assertion_ids}
            owned = [a for a in cur.assertion_ids if a not in later]
            failing = [a for a in owned if a not in yes]
            if not failing:
                done.append(cur)
                notes.append(f"done: {cur.text}")
            elif cur.attempts >= k:
                dropped.append(cur)
                given_up.update(failing)
                notes.append(f"dropped after {cur.attempts} attempts: {cur.text}")
            elif cur.op == "generate" and any(a in yes for a in owned if _kind(spec, a) in ("exists", "count")):
                # a usable base scene: keep it and repair what is missing with edits
                done.append(cur)
                notes.append(f"done (partly): {cur.text}")
                front: list[Command] = []
                for a in failing:
                    rep = self._repair(spec, a, feedback, repairs, given_up)
                    if rep is not None:
                        front.append(rep)
                pending = front + pending
            else:
                new = self._rewrite(spec, cur, failing, feedback)
                pending.insert(0, new)
                notes.append(f"retry {cur.attempts}/{k}: {new.text}")

        # pop commands whose assertions all hold (never the refine, which serves no assertion)
        keep: list[Command] = []
        for c in pending:
            if c.assertion_ids and all(a in yes for a in c.assertion_ids):
                done.append(c)
                notes.append(f"already holds: {c.text}")
            else:
                keep.append(c)
        pending = keep

        # repairs: failing assertions no pending command serves (they held once, then broke)
        served = {a for c in pending for a in c.assertion_ids}
        front = []
        for a in sorted(no - served - given_up, key=_order_key(spec)):
            rep = self._repair(spec, a, feedback, repairs, given_up)
            if rep is not None:
                front.append(rep)
                notes.append(f"repair{' (broke)' if a in plan.held else ''}: {rep.text}")
        pending = front + pending

        return Plan(
            spec=spec, pending=tuple(pending), done=tuple(done), dropped=tuple(dropped), steps=steps,
            max_steps=plan.max_steps, held=frozenset(yes), repairs=tuple(sorted(repairs.items())),
            given_up=frozenset(given_up), log=(*plan.log, "; ".join(notes) or "no change"),
        )

    # ------------------------------------------------------------------------------- helpers
    def _repair(self, spec: Spec, aid: str, fb: Feedback, repairs: dict[str, int], given_up: set[str]) -> Command | None:
        if repairs.get(aid, 0) >= self.max_attempts or aid in given_up:
            return None
        try:
            a = spec.assertion(aid)
        except KeyError:
            return None
        c = fix_command(spec, a, fb)
        if c is None:
            return None
        repairs[aid] = repairs.get(aid, 0) + 1
        return c

    def _rewrite(self, spec: Spec, cur: Command, failing: Sequence[str], fb: Feedback) -> Command:
        """The current command rewritten from the verdicts on its failing assertions (attempts kept)."""
        if cur.op in ("generate", "add", "background", "restyle", "refine"):
            return cur  # retried as is (a new seed); adds keep their full description
        for aid in failing:
            try:
                a = spec.assertion(aid)
            except KeyError:
                continue
            c = fix_command(spec, a, fb)
            if c is not None:
                return replace(c, attempts=cur.attempts)
        return cur


def _kind(spec: Spec, aid: str) -> str:
    try:
        return spec.assertion(aid).kind
    except KeyError:
        return ""


def _in_core(a: Assertion, core: set[int]) -> bool:
    if a.kind == "relation":
        return a.entity in core and a.reference in core
    return a.entity is not None and a.entity in core


def _order_key(spec: Spec) -> Callable[[str], int]:
    ids = [a.id for a in spec.assertions()]

    def key(aid: str) -> int:
        return ids.index(aid) if aid in ids else len(ids)

    return key


def _detections(fb: Feedback | None, noun: str) -> list[Detection]:
    """Detections of ``noun``, left to right (the order ordinals count in)."""
    if fb is None:
        return []
    dets = [d for d in fb.detections if d.label == noun]
    return sorted(dets, key=lambda d: ((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2))


def _found(fb: Feedback | None, noun: str, aid: str) -> int | None:
    """How many ``noun`` the critic saw: from detections, else from a "found N" reason, else None."""
    if fb is None:
        return None
    dets = _detections(fb, noun)
    if dets or fb.detections:
        return len(dets)
    for v in fb.verdicts:
        if v.assertion_id == aid:
            m = re.search(r"found (\d+)", v.reason)
            if m:
                return int(m.group(1))
    return None


def fix_command(spec: Spec, a: Assertion, fb: Feedback | None) -> Command | None:
    """A command that makes assertion ``a`` hold (targeted by ``fb`` when given)."""
    ents = spec.entities
    if a.kind in ("color", "pattern", "size") and a.entity is not None and a.value is not None:
        e = ents[a.entity]
        op = {"color": "recolor", "pattern": "retexture", "size": "resize"}[a.kind]
        who = _who(e)
        if fb is not None and e.count > 1:
            dets = _detections(fb, e.noun)
            wrong = [k for k, d in enumerate(dets) if getattr(d, a.kind) not in (None, a.value)]
            if len(wrong) == 1 and wrong[0] < len(_ORDINAL_WORDS):
                who = f"the {_ORDINAL_WORDS[wrong[0]]} {e.noun}"
        return Command(op, f"{op}: make {who} {a.value}", (a.id,), target=a.entity)
    if a.kind == "relation" and a.entity is not None and a.reference is not None and a.value is not None:
        s, o = ents[a.entity], ents[a.reference]
        return Command("move", f"move: put {_who(s)} {a.value} {_who(o)}", (a.id,), target=a.entity)
    if a.kind == "background" and a.value is not None:
        return Command("background", f"background: change the background to {_BG_PHRASE.get(a.value, a.value)}",
                       (a.id,))
    if a.kind == "style" and a.value is not None:
        return Command("restyle", f"restyle: make it {_STYLE_PHRASE.get(a.value, a.value)}", (a.id,))
    if a.kind in ("exists", "count") and a.entity is not None:
        e = ents[a.entity]
        want = e.count
        seen = _found(fb, e.noun, a.id)
        if seen is not None and seen > want:
            extra = seen - want
            return Command("remove", f"remove: {number_word(extra)} {e.noun if extra == 1 else plural(e.noun)}",
                           (a.id,), target=a.entity)
        missing = want - seen if seen is not None and 0 < seen < want else want
        text = "add: " + noun_phrase(e.noun, missing, e.color, e.pattern, e.size)
        for r in spec.relations:
            if r.subject == a.entity:
                text += f" {r.relation} {_who(ents[r.reference])}"
                break
            if r.reference == a.entity:
                text += f" {_INVERSE[r.relation]} {_who(ents[r.subject])}"
                break
        return Command("add", text, (a.id,), target=a.entity)
    if a.kind == "exclusion" and a.value is not None and a.count is not None:
        noun = a.value
        if a.count == 1:
            return Command("remove", f"remove: the {plural(noun)}", (a.id,))
        seen = _found(fb, noun, a.id)
        extra = max(1, (seen or a.count) - a.count + 1)
        return Command("remove", f"remove: {number_word(extra)} {noun if extra == 1 else plural(noun)}", (a.id,))
    return None
