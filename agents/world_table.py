"""``poser bench world``: which card-version-2 expert is best for each editing op, per observable context.

For every scene (a card-version-2 generator drawing a test-split prompt) and every editing op, the benchmark builds
commands on the scene's own objects (one per chosen target), applies **each** expert that supports the op to the
same command, scene and seed, and scores the result on the scene graph:

- *own*: the command did what it asked (the target has the new colour / pattern / size, is gone, stands in the
  relation to every object of the reference noun (:func:`poser_env.core.geometry.relation_holds`, the judge's
  geometry), the added object exists with its colour and relation, the background / style is the asked one, the
  blemishes are gone);
- *collateral*: nothing else broke: every object the command did not target keeps its noun, colour, pattern and
  size and is still there, the target keeps the attributes the command did not ask to change (an added object
  must not overlap an existing one); and no assertion of the scene's prompt that the judge
  (:class:`experts.sim.judge.SceneJudge`) passed before fails after, except those about the target's noun.

A command succeeds when both hold; it is *clean* when it also left no new blemish of strength >= 0.5
(:data:`VISIBLE_BLEMISH`; the judge's fidelity counts every blemish, success does not). Context buckets are what the critic sees in its detections: the target's size
class, whether it is crowded (:func:`experts.sim.layout.is_crowded`), whether the command names it by an ordinal
("the second clock"), and the number of objects; ``refine`` runs on the scene with 1-4 blemishes added (as edits
leave them) and is bucketed by their number.

Example::

    md, cells = world_table(n_scenes=40)
    print(md)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from experts.registry import expert_names, make_expert, sim_cards
from experts.sim.experts import SimEditor, SimTextToImage
from experts.sim.judge import SceneJudge, scene_fidelity
from experts.sim.layout import is_crowded
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.commands import OPS
from poser_env.core.geometry import relation_holds
from poser_env.core.grammar import parse_command
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, SIZES, STYLES, Spec
from poser_env.core.text import plural, stable_hash
from poser_env.prompts import NOUNS, geneval_style, long_prompts

__all__ = ["EDIT_OPS", "ORDINALS", "Trial", "world_table", "world_trials"]

#: The editing ops benchmarked (every op but ``generate``).
EDIT_OPS: tuple[str, ...] = tuple(o for o in OPS if o != "generate")
#: Ordinal words of the command grammar, 0-based.
ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                             "tenth")
_REL = ("left of", "right of", "above", "below")
#: Smallest bucket (trials per expert) that counts for "the best expert changes with context".
MIN_BUCKET: int = 30
#: Strength from which a new blemish counts against a *clean* success.
VISIBLE_BLEMISH: float = 0.5
#: The target attributes each op may change (the others must stay).
_CHANGES: dict[str, tuple[str, ...]] = {"recolor": ("color",), "retexture": ("pattern",), "resize": ("size",),
                                        "move": (), "remove": ()}


@dataclass(frozen=True)
class Trial:
    """One expert applied to one command: the op, the expert, its context buckets and the scores."""

    op: str
    expert: str
    context: tuple[tuple[str, str], ...]
    own: bool
    collateral: bool
    fidelity: float
    blemish: bool = False

    @property
    def success(self) -> bool:
        """The command did what it asked and nothing else broke."""
        return self.own and not self.collateral

    @property
    def clean(self) -> bool:
        """A success that left no new visible blemish (strength >= :data:`VISIBLE_BLEMISH`)."""
        return self.success and not self.blemish


def _ordered(scene: Scene, noun: str) -> list[int]:
    idx = [i for i, o in enumerate(scene.objects) if o.noun == noun]
    return sorted(idx, key=lambda i: (scene.objects[i].center[0], scene.objects[i].center[1], i))


def _name(scene: Scene, i: int) -> tuple[str, bool]:
    """How a command names object ``i``: ("the second clock", True) or ("the clock", False)."""
    noun = scene.objects[i].noun
    same = _ordered(scene, noun)
    if len(same) == 1:
        return f"the {noun}", False
    k = same.index(i)
    return (f"the {ORDINALS[k]} {noun}", True) if k < len(ORDINALS) else (f"the last {noun}", True)


def _ref(scene: Scene, noun: str) -> str:
    return f"the {plural(noun)}" if len(_ordered(scene, noun)) > 1 else f"the {noun}"


def _pick(rng: np.random.Generator, seq: Sequence[str], avoid: str | None = None) -> str:
    opts = [s for s in seq if s != avoid]
    return opts[int(rng.integers(len(opts)))]


def _target_context(scene: Scene, i: int, ordinal: bool) -> tuple[tuple[str, str], ...]:
    n = len(scene.objects)
    return (("size", scene.objects[i].size), ("crowded", "yes" if is_crowded([o.box for o in scene.objects], i) else "no"),
            ("ordinal", "yes" if ordinal else "no"), ("objects", "1-3" if n <= 3 else "4+"))


def _same(a: SceneObject, b: SceneObject) -> bool:
    return (a.noun, a.color, a.pattern, a.size) == (b.noun, b.color, b.pattern, b.size)


def _others_broken(before: Scene, after: Scene, targets: set[int], index_aligned: bool, op: str = "") -> bool:
    """Whether an untargeted object of ``before`` changed or vanished in ``after``, or a target changed an attribute
    that ``op`` does not ask for."""
    for i, o in enumerate(before.objects):
        if i in targets:
            if op in _CHANGES and index_aligned and len(after.objects) == len(before.objects):
                a = after.objects[i]
                if any(getattr(a, k) != getattr(o, k) for k in ("noun", "color", "pattern", "size")
                       if k not in _CHANGES[op]):
                    return True
            continue
        if index_aligned and len(after.objects) >= len(before.objects):
            if not _same(o, after.objects[i]):
                return True
        elif not any(a.box == o.box and _same(o, a) for a in after.objects):
            return True
    return False


def _prompt_broken(judge: SceneJudge, spec: Spec, before: Scene, after: Scene, op: str, target_noun: str | None) -> bool:
    """Whether a prompt assertion that held before fails after. Assertions the command may change on purpose are
    excepted: those naming the target's noun (as subject or reference), and the background / style one of a
    background / restyle command."""
    skip_kind = {"background": "background", "restyle": "style"}.get(op)
    about: dict[str, bool] = {}
    for a in spec.assertions():
        nouns = {spec.entities[g].noun for g in (a.entity, a.reference) if g is not None}
        about[a.id] = (target_noun is not None and target_noun in nouns) or a.kind == skip_kind
    fb_before, fb_after = judge(before, spec), judge(after, spec)
    return any(vb.ok and not va.ok and not about.get(vb.assertion_id, False)
               for vb, va in zip(fb_before.verdicts, fb_after.verdicts))


def _commands(op: str, scene: Scene, rng: np.random.Generator, per_op: int
              ) -> list[tuple[str, set[int], tuple[tuple[str, str], ...], dict[str, str]]]:
    """(command, target indices, context, what to check) for ``op`` on ``scene``."""
    n = len(scene.objects)
    out: list[tuple[str, set[int], tuple[tuple[str, str], ...], dict[str, str]]] = []
    order = [int(i) for i in rng.permutation(n)][:per_op]
    if op in ("recolor", "retexture", "remove", "resize", "move"):
        for i in order:
            o = scene.objects[i]
            who, ordinal = _name(scene, i)
            ctx = _target_context(scene, i, ordinal)
            if op == "recolor":
                v = _pick(rng, COLORS, o.color)
                out.append((f"recolor: make {who} {v}", {i}, ctx, {"color": v}))
            elif op == "retexture":
                v = _pick(rng, PATTERNS, o.pattern)
                out.append((f"retexture: make {who} {v}", {i}, ctx, {"pattern": v}))
            elif op == "remove":
                out.append((f"remove: {who}", {i}, ctx, {}))
            elif op == "resize":
                v = _pick(rng, SIZES, o.size)
                out.append((f"resize: make {who} {v}", {i}, ctx, {"size": v}))
            else:
                refs = sorted({p.noun for p in scene.objects} - {o.noun})
                if not refs:
                    continue
                ref = refs[int(rng.integers(len(refs)))]
                rel = _pick(rng, _REL)
                out.append((f"move: put {who} {rel} {_ref(scene, ref)}", {i}, ctx, {"relation": rel, "reference": ref}))
    elif op == "add":
        present = {o.noun for o in scene.objects}
        if not present:
            return out
        ref = sorted(present)[int(rng.integers(len(present)))]
        noun = _pick(rng, [m for m in NOUNS if m not in present])
        color, rel = _pick(rng, COLORS), _pick(rng, _REL)
        crowded = any(is_crowded([o.box for o in scene.objects], j) for j in _ordered(scene, ref))
        ctx = (("crowded", "yes" if crowded else "no"),
               ("objects", "1-3" if n <= 3 else "4-5" if n <= 5 else "6+"))
        out.append((f"add: a {color} {noun} {rel} {_ref(scene, ref)}", set(), ctx,
                    {"noun": noun, "color": color, "relation": rel, "reference": ref}))
    else:
        small = any(o.size == "small" for o in scene.objects)
        patterned = any(o.pattern != "plain" for o in scene.objects)
        ctx = (("objects", "1-3" if n <= 3 else "4+"), ("small objects", "yes" if small else "no"),
               ("patterns", "yes" if patterned else "no"))
        if op == "background":
            v = _pick(rng, BACKGROUNDS, scene.background)
            out.append((f"background: change the background to {v}", set(), ctx, {"background": v}))
        elif op == "restyle":
            v = _pick(rng, STYLES, scene.style)
            out.append((f"restyle: make it {v}", set(), ctx, {"style": v}))
        else:
            k = int(rng.integers(1, 5))
            ctx = (*ctx, ("blemishes", "1" if k == 1 else "2" if k == 2 else "3-4"))
            out.append(("refine: improve the details", set(), ctx, {"blemishes": str(k)}))
    return out


def _own(op: str, before: Scene, after: Scene, targets: set[int], want: dict[str, str]) -> bool:
    if op in ("background", "restyle"):
        return after.background == want["background"] if op == "background" else after.style == want["style"]
    if op == "refine":
        return not after.artifacts
    if op == "add":
        new = [o for o in after.objects[len(before.objects):] if o.noun == want["noun"]]
        refs = [o for o in after.objects if o.noun == want["reference"]]
        return bool(new) and bool(refs) and all(
            o.color == want["color"] and all(relation_holds(o.box, r.box, want["relation"]) for r in refs) for o in new)
    (i,) = targets
    t = before.objects[i]
    if op == "remove":
        return not any(a.box == t.box and a.noun == t.noun for a in after.objects)
    if len(after.objects) != len(before.objects):
        return False
    a = after.objects[i]
    if op in ("recolor", "retexture", "resize"):
        attr = next(iter(want))
        return bool(getattr(a, attr) == want[attr])
    refs = [o for j, o in enumerate(after.objects) if o.noun == want["reference"] and j != i]
    return bool(refs) and all(relation_holds(a.box, r.box, want["relation"]) for r in refs)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _dirty(scene: Scene, k: int, rng: np.random.Generator) -> Scene:
    side = min(scene.width, scene.height)
    arts = tuple(Artifact(float(rng.uniform(0, scene.width)), float(rng.uniform(0, scene.height)),
                          float(rng.uniform(0.02, 0.05) * side), float(rng.uniform(0.3, 0.6)), int(rng.integers(2**31)))
                 for _ in range(k))
    return replace(scene, artifacts=scene.artifacts + arts)


def world_trials(n_scenes: int = 40, *, seed: int = 0, per_op: int = 2,
                 generators: Sequence[str] = ("sim/flux", "sim/ella")) -> list[Trial]:
    """Every (scene, op, command, expert) trial of :func:`world_table` (see the module docstring).

    Args:
        n_scenes: Scenes drawn (>= 1): half GenEval-style test prompts, half long test prompts (crowded scenes).
        seed: Varies the prompts and the commands.
        per_op: Commands per op and scene (distinct targets, >= 1).
        generators: Card-version-2 text-to-image experts that draw the scenes, in turn.

    Raises:
        ValueError: a bad ``n_scenes``, ``per_op`` or generator name.
    """
    if isinstance(n_scenes, bool) or not isinstance(n_scenes, int) or n_scenes < 1:
        raise ValueError(f"n_scenes={n_scenes!r} must be an int >= 1.")
    if isinstance(per_op, bool) or not isinstance(per_op, int) or per_op < 1:
        raise ValueError(f"per_op={per_op!r} must be an int >= 1.")
    reg = sim_cards(2)
    names = expert_names(2)
    gens = []
    for g in generators:
        e = make_expert(g, registry=reg) if g in names else None
        if not isinstance(e, SimTextToImage):
            raise ValueError(f"generators entry {g!r} is not a card-version-2 text-to-image expert; use one of "
                             f"{[n for n in names if 'generate' in reg.entry(n).kwargs['ops']]}.")
        gens.append(e)
    editors = [e for e in (make_expert(n, registry=reg) for n in names) if isinstance(e, SimEditor)]
    specs = geneval_style("test", n_scenes - n_scenes // 2, seed=seed) + long_prompts("test", n_scenes // 2, seed=seed)
    judge = SceneJudge()
    trials: list[Trial] = []
    for k, spec in enumerate(specs):
        gen = gens[k % len(gens)]
        scene = gen(f"generate: {spec.prompt}", seed=seed + k).state
        assert isinstance(scene, Scene)
        for op in EDIT_OPS:
            rng = np.random.default_rng([seed, k, stable_hash("world-table", op, bits=32)])
            base = _dirty(scene, int(rng.integers(1, 5)), rng) if op == "refine" else scene
            for text, targets, ctx, want in _commands(op, base, rng, per_op):
                if op == "refine":
                    base = replace(scene, artifacts=())
                    base = _dirty(base, int(want["blemishes"]), np.random.default_rng([seed, k, 7]))
                parsed = parse_command(text)
                noun = base.objects[next(iter(targets))].noun if targets else want.get("noun")
                for e in editors:
                    if op not in e.ops:
                        continue
                    after = e.execute(parsed, base, seed=seed + k, command=text).state
                    assert isinstance(after, Scene)
                    aligned = op not in ("remove",) and len(after.objects) >= len(base.objects)
                    coll = _others_broken(base, after, targets, aligned, op)
                    if op == "add":
                        coll = coll or any(_overlaps(n.box, o.box) for n in after.objects[len(base.objects):]
                                           for o in base.objects)
                    if not coll:
                        coll = _prompt_broken(judge, spec, base, after, op, noun)
                    old = set(base.artifacts)
                    blemish = any(a.strength >= VISIBLE_BLEMISH for a in after.artifacts if a not in old)
                    trials.append(Trial(op, e.name, ctx, _own(op, base, after, targets, want), coll,
                                        scene_fidelity(after), blemish))
    return trials


def _section(trials: Sequence[Trial], clean: bool) -> tuple[list[str], dict[str, dict[str, str]]]:
    cells: dict[tuple[str, str, str], list[Trial]] = defaultdict(list)
    buckets: dict[str, list[str]] = defaultdict(list)
    for t in trials:
        for key, val in (("all", "all"), *t.context):
            if val == "-":
                continue
            b = f"{key}={val}" if key != "all" else "all"
            cells[(t.op, t.expert, b)].append(t)
            if b not in buckets[t.op]:
                buckets[t.op].append(b)
    lines: list[str] = []
    best: dict[str, dict[str, str]] = {}
    reg = sim_cards(2)
    for op in EDIT_OPS:
        experts = sorted({t.expert for t in trials if t.op == op}, key=expert_names(2).index)
        bs = sorted(buckets[op], key=lambda b: (b != "all", b))
        best[op] = {}
        rates: dict[tuple[str, str], float] = {}
        for b in bs:
            for e in experts:
                ts = cells.get((op, e, b), [])
                if ts:
                    rates[(e, b)] = sum(t.clean if clean else t.success for t in ts) / len(ts)
            scored = [(rates[(e, b)], -float(reg.entry(e).kwargs["cost"]), e) for e in experts if (e, b) in rates]
            if scored:  # ties go to the cheaper expert
                best[op][b] = max(scored)[2]
        lines.append(f"### {op}" + (" (clean)" if clean else ""))
        lines.append("| expert | " + " | ".join(bs) + " |")
        lines.append("|---|" + "---|" * len(bs))
        for e in experts:
            row = []
            for b in bs:
                ts = cells.get((op, e, b), [])
                if not ts:
                    row.append("-")
                    continue
                fid = float(np.mean([t.fidelity for t in ts]))
                cell = f"{100 * rates[(e, b)]:.0f}% f{fid:.2f} ({len(ts)})"
                row.append(f"**{cell}**" if best[op].get(b) == e else cell)
            cost = float(reg.entry(e).kwargs["cost"])
            lines.append(f"| `{e}` (cost {cost:g}) | " + " | ".join(row) + " |")
        big = [b for b in bs if b in best[op] and all(len(cells.get((op, e, b), [])) >= MIN_BUCKET for e in experts)]
        winners = sorted({best[op][b] for b in big})
        lines.append(f"\nbest expert changes with context (buckets with n >= {MIN_BUCKET}): "
                     f"{'yes' if len(winners) > 1 else 'no'} ({', '.join(winners)})\n")
    return lines, best


def world_table(n_scenes: int = 40, *, seed: int = 0, per_op: int = 2,
                generators: Sequence[str] = ("sim/flux", "sim/ella")) -> tuple[str, dict[str, dict[str, str]]]:
    """The context-bucket table: op x expert x bucket -> success rate, mean fidelity and n, the best expert of each
    bucket; then the same for *clean* successes (no new visible blemish).

    Returns:
        (markdown, best) where ``best[op][bucket]`` names the expert with the highest success rate there.
    """
    trials = world_trials(n_scenes, seed=seed, per_op=per_op, generators=generators)
    head = [f"SceneSim v1 world (cards v2), {n_scenes} scenes, seed {seed}, {len(trials)} trials. Success = the "
            "command's own effect and no collateral; clean = also no new blemish of strength >= "
            f"{VISIBLE_BLEMISH:g}. Cell: rate, mean image fidelity after the edit (judge's scene_fidelity), (n); "
            "bold = best in the bucket.", "", "## success", ""]
    lines, best = _section(trials, clean=False)
    clean_lines, _ = _section(trials, clean=True)
    return "\n".join([*head, *lines, "## clean success", "", *clean_lines]), best
