"""SceneSim's simulated experts: text-to-image generators and editors with model-carded failure modes.

Every expert reads its command **text** through :func:`poser_env.core.grammar.parse_command`, takes the previous
scene graph from ``state=`` (editors), applies the limitations of its card with ``np.random.default_rng(seed)``
only, and returns ``ExpertOutput(image=render(scene), state=scene, seed, elapsed, metadata)``. The same
command, state and seed give the same scene and byte-identical pixels in every process.

The behaviour numbers live in the shipped registry file ``experts/sim/cards.toml`` (see
:mod:`experts.registry`); they are *analogues* of real model families, not claims about them.

Card parameters (probabilities in [0, 1] unless noted):

=======================  ==========================================================================
``cost``                 cost of one call (arbitrary units, >= 0; the cheapest T2I is 1)
``ops``                  operations supported (subset of :data:`poser_env.core.expert.OPS`)
``max_entities``         groups drawn at most (later groups of a prompt are left out), >= 1
``entity_drop``          chance each drawn group is left out anyway
``count_limit``          counts up to this are drawn right with ``count_accuracy``, >= 1
``count_accuracy``       ... chance the count of a group is right (else off by one or two)
``count_accuracy_beyond`` chance the count is right above ``count_limit``
``color_binding``        chance a group gets its requested colour (in a prompt with one coloured group)
``binding_decay``        binding gets worse with more coloured groups: the chance is
                         ``color_binding * max(0.5, 1 - binding_decay * (k - 1))`` for ``k`` coloured groups
                         (attribute binding degrades with more objects, as in T2I-CompBench)
``attribute_leakage``    T2I: share of binding failures that take another group's colour (else random);
                         editors: chance a recolor/retexture also hits the nearest other object
``attribute_accuracy``   chance a requested pattern / size is drawn
``relation_accuracy``    chance the layout honours a relation (else objects land anywhere)
``scene_accuracy``       chance a requested background / style is drawn (else another one)
``edit_accuracy``        editors: chance each targeted object is changed as asked
``artifacts``            mean number of blemishes a call leaves (Poisson), >= 0
``artifact_strength``    mean strength of a blemish
``artifact_removal``     refine: chance each blemish is removed
``drift``                refine / restyle: chance one object's detail drifts (colour or pattern)
``fidelity``             rendering quality the expert reaches (scene.quality), T2I sets it, editors
                         cap it (refine raises it)
``glyph_noise``          how far silhouettes depart from the canonical glyph (confuses detectors)
``glyph_variants``       0 (default): every object's silhouette is perturbed on its own (continuous noise,
                         seeded by its box); N >= 1 (an int): the noise is rounded to the nearest of N levels
                         ``k / (N - 1)`` (level 0: the canonical glyph), each level one fixed shape per noun
                         (``SceneObject.glyph_variant`` = k), so the renderer rasterises at most N shapes per noun
                         for every expert and reuses them (much faster; the same draws from the rng)
``noise_bank``           false (default): the degradation noise of an image is drawn afresh from its seed; true: it
                         is a window (placed and flipped by the seed) of one fixed Gaussian field per canvas size,
                         the same statistics without drawing 3 normals a pixel (``Scene.noise_bank``; faster)
``default_style``        style drawn when the prompt names none
=======================  ==========================================================================

Context fields (card version 2; their defaults mean "no such behaviour" and draw no random number, so version-1
cards behave exactly as before). *Crowded* = the gap from the target's box to the nearest other box is below
:data:`experts.sim.layout.CROWDED_GAP` x the target's shorter side (:func:`experts.sim.layout.is_crowded`);
*size* = the object's size class; *ordinal* = the command names one of several objects of a noun.

==========================  =======================================================================
``ordinal_blind``           recolor/retexture: chance an ordinal target ("the second clock") changes
                            **every** object of that noun (no mask: cannot single one out)
``crowded_leakage``         recolor/retexture: leakage chance when the target is crowded (None: as
                            ``attribute_leakage``)
``scene_edit_accuracy``     background/restyle: accuracy (None: ``edit_accuracy``)
``scene_drift``             background/restyle: the ``drift`` chance there (None: ``drift``)
``find_accuracy``           remove/recolor/retexture: chance a medium or large target is found first
                            (grounding); not found -> that target is left as it is
``find_accuracy_small``     ... the same for a small target
``miss_erase_small``        chance a small target that was not found is erased by the mask
``ghost_rate``              remove: chance a removed small/medium object leaves a ghost blemish
``ghost_strength``          ... its mean strength
``ghost_rate_large``        remove: chance a removed large object leaves a ghost blemish
``ghost_strength_large``    ... its mean strength
``crowd_threshold``         add: a scene with at least this many objects counts as crowded (0: never)
``crowded_relation_accuracy`` add: relation accuracy in a crowded scene, and the chance a relation the
                            layout finds no free box for is still honoured by overlapping others
                            (None: no such rule)
``relation_accuracy_large`` move: relation accuracy for a large target (None: ``relation_accuracy``)
``fail_without_room``       move: chance the move is abandoned (target left in place, with a note)
                            when the layout finds no free box honouring the relation
``joint_layout``            move/resize: chance the target **and** all objects of the reference noun
                            are re-laid out together (others pushed aside when there is no room)
``keep_color``              joint layout: chance each re-laid-out object keeps its colour (else another)
``keep_pattern``            joint layout: chance each re-laid-out object keeps its pattern (else another)
``collateral_ops``          ops after which the collateral effects below apply
``collateral_drift``        chance per other (untargeted) object that one of them drifts (colour or
                            pattern, as ``drift``), capped at ``collateral_drift_cap``
``collateral_drift_cap``    ... the cap of that chance
``detail_loss``             chance each object's pattern becomes plain (re-noising)
``small_vanish``            chance each small object vanishes (re-noising)
==========================  =======================================================================

Ordinals of edits ("the second clock") count the objects of that noun **left to right** by box centre
(ties top to bottom).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np

from experts.sim.layout import FULL, GAP, Constraint, free_mask, is_crowded, layout_box, place, zone_for
from experts.sim.render import render
from experts.sim.scene import Artifact, Scene, SceneObject
from poser_env.core.commands import OPS, CommandError, ParsedCommand
from poser_env.core.expert import Expert, ExpertKind, ExpertOutput
from poser_env.core.geometry import Box
from poser_env.core.grammar import parse_command
from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, RELATIONS, SIZES, STYLES, Entity, Relation
from poser_env.core.text import stable_hash

__all__ = ["GAP", "MAX_GLYPH_VARIANTS", "SimEditor", "SimExpert", "SimProfile", "SimTextToImage", "layout_box"]

#: Colours an object drifts to (refine/restyle drift, leaky recolours of similar hues).
_SIMILAR: dict[str, tuple[str, ...]] = {
    "red": ("orange", "pink"), "orange": ("red", "yellow", "brown"), "yellow": ("orange", "green"),
    "green": ("yellow", "blue"), "blue": ("purple", "green"), "purple": ("blue", "pink"),
    "pink": ("red", "purple"), "brown": ("orange", "black"), "black": ("gray", "brown"),
    "white": ("gray", "yellow"), "gray": ("white", "black"),
}


#: Most shape variants per noun a card may ask for (``glyph_variants``).
MAX_GLYPH_VARIANTS = 64


@dataclass(frozen=True)
class SimProfile:
    """The behaviour numbers of one simulated expert (see the module docstring for each field)."""

    cost: float = 1.0
    ops: tuple[str, ...] = ("generate",)
    max_entities: int = 10
    entity_drop: float = 0.0
    count_limit: int = 10
    count_accuracy: float = 1.0
    count_accuracy_beyond: float = 1.0
    color_binding: float = 1.0
    binding_decay: float = 0.0
    attribute_leakage: float = 0.0
    attribute_accuracy: float = 1.0
    relation_accuracy: float = 1.0
    scene_accuracy: float = 1.0
    edit_accuracy: float = 1.0
    artifacts: float = 0.0
    artifact_strength: float = 0.5
    artifact_removal: float = 0.0
    drift: float = 0.0
    fidelity: float = 0.9
    glyph_noise: float = 0.0
    default_style: str = "photo"
    # ---- context fields (card version 2); defaults: no such behaviour, no random draw
    ordinal_blind: float = 0.0
    crowded_leakage: float | None = None
    scene_edit_accuracy: float | None = None
    scene_drift: float | None = None
    find_accuracy: float = 1.0
    find_accuracy_small: float = 1.0
    miss_erase_small: float = 0.0
    ghost_rate: float = 0.0
    ghost_strength: float = 0.3
    ghost_rate_large: float = 0.0
    ghost_strength_large: float = 0.7
    crowd_threshold: int = 0
    crowded_relation_accuracy: float | None = None
    relation_accuracy_large: float | None = None
    fail_without_room: float = 0.0
    joint_layout: float = 0.0
    keep_color: float = 1.0
    keep_pattern: float = 1.0
    collateral_ops: tuple[str, ...] = ()
    collateral_drift: float = 0.0
    collateral_drift_cap: float = 1.0
    detail_loss: float = 0.0
    small_vanish: float = 0.0
    glyph_variants: int = 0
    noise_bank: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "collateral_ops", tuple(self.collateral_ops))
        for op in self.ops:
            if op not in OPS:
                raise ValueError(f"ops entry {op!r} is not one of {OPS}; fix the expert's card.")
        if not self.ops:
            raise ValueError("ops=() is empty; an expert must support at least one of " + repr(OPS))
        for op in self.collateral_ops:
            if op not in self.ops:
                raise ValueError(f"collateral_ops entry {op!r} is not one of the expert's ops {self.ops}; fix the card.")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("ops", "default_style", "collateral_ops"):
                continue
            if v is None and f.default is None:
                continue
            if f.name == "noise_bank":
                if not isinstance(v, bool):
                    raise ValueError(f"noise_bank={v!r} must be true or false.")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ValueError(f"{f.name}={v!r} must be a finite number.")
            if f.name == "glyph_variants":
                if not isinstance(v, int) or not 0 <= v <= MAX_GLYPH_VARIANTS:
                    raise ValueError(f"glyph_variants={v!r} must be an int from 0 (continuous glyph noise) to "
                                     f"{MAX_GLYPH_VARIANTS} (shape variants per noun).")
            elif f.name in ("max_entities", "count_limit"):
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{f.name}={v!r} must be an int >= 1.")
            elif f.name == "crowd_threshold":
                if not isinstance(v, int) or v < 0:
                    raise ValueError(f"{f.name}={v!r} must be an int >= 0 (0: no crowding rule).")
            elif f.name in ("cost", "artifacts"):
                if v < 0:
                    raise ValueError(f"{f.name}={v!r} must be >= 0.")
            elif not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name}={v!r} must be a probability in [0, 1].")
        if self.default_style not in STYLES:
            raise ValueError(f"default_style={self.default_style!r} must be one of {STYLES}.")


@lru_cache(maxsize=4096)
def _parse(text: str) -> ParsedCommand:
    return parse_command(text)


def _render(scene: Scene) -> np.ndarray:
    return render(scene)


def _with_attr(o: SceneObject, attr: str, value: str) -> SceneObject:
    return replace(o, color=value) if attr == "color" else replace(o, pattern=value)


def _hit(rng: np.random.Generator, p: float) -> bool:
    """True with probability ``p``; draws a random number only when 0 < p < 1 (context fields at 0 or 1 cost no
    draw)."""
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return bool(rng.random() < p)


def _box_size(o: SceneObject, size: str, canvas: int, rng: np.random.Generator) -> tuple[float, float]:
    """Width and height (pixels) of ``o`` re-laid out at ``size``: its own box when the size is unchanged, else a
    new box of that size class (one draw from ``rng``)."""
    if size == o.size:
        return o.box[2] - o.box[0], o.box[3] - o.box[1]
    w, h = layout_box(size, canvas, rng)
    return w, h


def _ordered(scene: Scene, noun: str) -> list[int]:
    """Indices of the objects of ``noun`` in ``scene``, left to right by centre (ties top to bottom)."""
    idx = [i for i, o in enumerate(scene.objects) if o.noun == noun]
    return sorted(idx, key=lambda i: (scene.objects[i].center[0], scene.objects[i].center[1], i))


class SimExpert(Expert):
    """Base of SceneSim's experts: holds the card profile and the canvas size.

    Args:
        name: Registry name (e.g. ``"sim/layout"``).
        kind: ``"text-to-image"`` or ``"image-to-image"``.
        canvas_size: Side of the square canvas of generated scenes, 64 to 512 pixels (editors keep the size
            of the scene they edit).
        card: Descriptive model-card facts (analogue, summary, ...), kept for tables; no effect on behaviour.
        **profile: The :class:`SimProfile` numbers.

    Raises:
        ValueError: a bad ``canvas_size``, ``kind`` or profile number (named in the message).
    """

    def __init__(
        self,
        name: str,
        *,
        kind: ExpertKind = "text-to-image",
        canvas_size: int = 128,
        card: dict[str, Any] | None = None,
        **profile: Any,
    ) -> None:
        if isinstance(canvas_size, bool) or not isinstance(canvas_size, int) or not 64 <= canvas_size <= 512:
            raise ValueError(f"canvas_size={canvas_size!r} must be an int from 64 to 512 pixels.")
        if kind not in ("text-to-image", "image-to-image"):
            raise ValueError(f"kind={kind!r} must be 'text-to-image' or 'image-to-image'.")
        unknown = sorted(set(profile) - {f.name for f in fields(SimProfile)})
        if unknown:
            raise ValueError(
                f"unknown card parameter(s) {unknown} for expert {name!r}; known: {[f.name for f in fields(SimProfile)]}."
            )
        self.name = name
        self.kind = kind
        self.canvas_size = canvas_size
        self.profile = SimProfile(**profile)
        self.ops = frozenset(self.profile.ops)
        self.cost = float(self.profile.cost)
        self.card = dict(card or {})

    # ------------------------------------------------------------------ shared helpers
    def _rng(self, seed: int, command: str) -> np.random.Generator:
        """All randomness of a call: seeded by ``seed``, the expert's name and the command text (as a real
        model's output depends on prompt and seed; two experts given the same seed make different mistakes)."""
        return np.random.default_rng([int(seed), stable_hash("sim-expert", self.name, command.strip(), bits=64)])

    def _parse(self, command: str) -> ParsedCommand:
        try:
            parsed = _parse(command.strip())
        except CommandError as exc:
            raise ValueError(f"command={command!r} cannot be parsed: {exc}") from exc
        if parsed.op not in self.ops:
            raise ValueError(
                f"expert {self.name!r} cannot run command={command!r} (op {parsed.op!r}); it supports "
                f"{sorted(self.ops)}. Pick an expert whose ops include {parsed.op!r}."
            )
        return parsed

    def _artifacts(self, rng: np.random.Generator, scene: Scene, near: Sequence[Box] = ()) -> tuple[Artifact, ...]:
        p = self.profile
        n = int(rng.poisson(p.artifacts)) if p.artifacts > 0 else 0
        out = []
        for _ in range(n):
            if near:
                b = near[int(rng.integers(len(near)))]
                x, y = rng.uniform(b[0], b[2]), rng.uniform(b[1], b[3])
            else:
                x, y = rng.uniform(0, scene.width), rng.uniform(0, scene.height)
            radius = float(rng.uniform(0.02, 0.05) * min(scene.width, scene.height))
            strength = float(np.clip(rng.normal(p.artifact_strength, 0.15), 0.05, 1.0))
            out.append(Artifact(float(x), float(y), radius, strength, int(rng.integers(2**31))))
        return tuple(out)

    def _glyph_noise(self, rng: np.random.Generator) -> float:
        return self._glyph_draw(rng)[0]

    def _glyph_draw(self, rng: np.random.Generator) -> tuple[float, int]:
        """(glyph noise in [0, 1], glyph variant) of a new object, from one uniform draw in [0, 2 * glyph_noise].

        ``glyph_variants`` = 0: the draw itself and variant -1 (a shape of its own). N > 0: the draw rounded to the
        nearest of the N levels ``k / max(N - 1, 1)`` (k = 0..N-1; k = 0 is the canonical glyph), and variant k:
        every expert with the same N draws the same N shapes per noun, so the renderer rasterises each once.
        """
        u = float(np.clip(rng.uniform(0.0, 2.0 * self.profile.glyph_noise), 0.0, 1.0))
        n = self.profile.glyph_variants
        if n <= 0:
            return u, -1
        step = 1.0 / max(n - 1, 1)
        k = min(int(u / step + 0.5), n - 1)
        return k * step, k

    def _draw_count(self, rng: np.random.Generator, count: int) -> int:
        p = self.profile
        acc = p.count_accuracy if count <= p.count_limit else p.count_accuracy_beyond
        if rng.random() < acc:
            return count
        if count == 1:
            return 2
        off = int(rng.choice([-2, -1, 1, 2], p=[0.15, 0.35, 0.35, 0.15]))
        return int(max(1, count + off))

    def _choose(self, rng: np.random.Generator, wanted: str | None, choices: Sequence[str], accuracy: float,
                default: str | None) -> str:
        """``wanted`` with probability ``accuracy`` else another choice; ``default`` (or random) when unasked."""
        if wanted is None:
            return default if default is not None else choices[int(rng.integers(len(choices)))]
        if rng.random() < accuracy:
            return wanted
        others = [c for c in choices if c != wanted]
        return others[int(rng.integers(len(others)))]

    def _unasked_size(self, rng: np.random.Generator) -> str:
        return str(rng.choice(SIZES, p=[0.25, 0.55, 0.2]))

    def _unasked_pattern(self, rng: np.random.Generator) -> str:
        return "plain" if rng.random() < 0.8 else PATTERNS[int(rng.integers(1, len(PATTERNS)))]

    def _output(self, scene: Scene, seed: int, t0: float, op: str, notes: list[str]) -> ExpertOutput:
        if scene.noise_bank != self.profile.noise_bank:  # this expert's card decides how its image is rendered
            scene = replace(scene, noise_bank=self.profile.noise_bank)
        image = _render(scene)
        return ExpertOutput(
            image=image, seed=seed, elapsed=time.perf_counter() - t0, state=scene,
            metadata={"expert": self.name, "op": op, "cost": self.cost, "notes": tuple(notes)},
        )

    def _draw_groups(
        self,
        rng: np.random.Generator,
        entities: Sequence[Entity],
        relations: Sequence[Relation],
        scene: Scene,
        occupied: list[Box],
        notes: list[str],
        extra_refs: Sequence[tuple[int, str, list[Box]]] = (),
        overlap: float = 0.0,
    ) -> list[SceneObject]:
        """Draw groups with this card's limitations and lay them out among ``occupied`` boxes.

        ``extra_refs`` are (group index, relation, reference boxes already on the canvas) constraints.
        ``overlap``: chance that a box whose relation finds no free place is put where the relation holds,
        overlapping other objects (0: never, and no random draw).
        """
        p = self.profile
        keep = [i for i in range(min(len(entities), p.max_entities)) if not rng.random() < p.entity_drop]
        if len(entities) > p.max_entities:
            notes.append(f"left out {len(entities) - p.max_entities} group(s) beyond max_entities")
        requested = [e.color for e in entities if e.color is not None]
        binding = p.color_binding * max(0.5, 1.0 - p.binding_decay * max(0, len(requested) - 1))
        honoured = [rng.random() < p.relation_accuracy for _ in relations]
        # order: references before their subjects (honoured relations only), else mention order
        placed_groups: list[int] = []
        pending = list(keep)
        while pending:
            ready = [g for g in pending
                     if all(r.reference not in pending or r.reference == g
                            for r, h in zip(relations, honoured) if h and r.subject == g)]
            g = ready[0] if ready else pending[0]
            pending.remove(g)
            placed_groups.append(g)
        boxes_of: dict[int, list[Box]] = {}
        objects: list[SceneObject] = []
        canvas = min(scene.width, scene.height)
        for g in placed_groups:
            e = entities[g]
            n = self._draw_count(rng, e.count)
            if n != e.count:
                notes.append(f"drew {n} {e.noun} instead of {e.count}")
            if e.color is not None and rng.random() >= binding:
                others = [c for c in requested if c != e.color]
                if others and rng.random() < p.attribute_leakage:
                    color = others[int(rng.integers(len(others)))]
                else:
                    color = self._choose(rng, e.color, COLORS, 0.0, None)
                notes.append(f"bound {color} to the {e.noun} instead of {e.color}")
            else:
                color = e.color if e.color is not None else COLORS[int(rng.integers(len(COLORS)))]
            pattern = self._choose(rng, e.pattern, PATTERNS, p.attribute_accuracy, None) \
                if e.pattern is not None else self._unasked_pattern(rng)
            size = self._choose(rng, e.size, SIZES, p.attribute_accuracy, None) \
                if e.size is not None else self._unasked_size(rng)
            cons: list[Constraint] = []
            for r, hon in zip(relations, honoured):
                if not hon:
                    continue
                if r.subject == g and r.reference in boxes_of:
                    cons += [Constraint(r.relation, np.asarray(b), True) for b in boxes_of[r.reference]]
                elif r.reference == g and r.subject in boxes_of:
                    cons += [Constraint(r.relation, np.asarray(b), False) for b in boxes_of[r.subject]]
            for gi, rel, refs in extra_refs:
                if gi == g:
                    cons += [Constraint(rel, np.asarray(b), True) for b in refs]
            zone = zone_for([r.relation for r, hon in zip(relations, honoured)
                          if hon and r.reference == g and r.subject not in boxes_of])
            boxes_of[g] = []
            for _ in range(n):
                w, h = layout_box(size, canvas, rng)
                box, met = place(rng, w, h, scene.width, scene.height, occupied, cons, zone)
                if cons and not met and _hit(rng, overlap):
                    box, met = place(rng, w, h, scene.width, scene.height, [], cons, zone)
                    if met:
                        notes.append(f"the {e.noun} overlaps others to honour its relation")
                if box is None:
                    notes.append(f"no room for a {e.noun}")
                    continue
                if not met:
                    notes.append(f"could not honour a relation of the {e.noun}")
                occupied.append(box)
                boxes_of[g].append(box)
                objects.append(SceneObject(e.noun, color, pattern, size, box, *self._glyph_draw(rng)))
        return objects


class SimTextToImage(SimExpert):
    """A simulated text-to-image expert (op ``generate``): draws a new scene from the command's spec.

    Example::

        expert = make_expert("sim/layout")
        out = expert("generate: two red clocks left of a blue dog", seed=0)
        out.image.shape  # (128, 128, 3)
    """

    def __init__(self, name: str = "sim/t2i", **kwargs: Any) -> None:
        kwargs.setdefault("ops", ("generate",))
        super().__init__(name, kind="text-to-image", **kwargs)

    def _generate(self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
                  detections: Sequence[Any], **params: Any) -> ExpertOutput:
        t0 = time.perf_counter()
        parsed = self._parse(command)
        return self.execute(parsed, seed=seed, command=command, t0=t0)

    def execute(self, parsed: ParsedCommand, *, seed: int, command: str = "", t0: float | None = None) -> ExpertOutput:
        """Run an already parsed ``generate`` command; ``command`` is its text (it seeds the randomness, so
        pass the text to get the same result as calling the expert with it)."""
        t0 = time.perf_counter() if t0 is None else t0
        rng = self._rng(seed, command)
        p = self.profile
        spec = parsed.spec
        notes: list[str] = []
        base = Scene(width=self.canvas_size, height=self.canvas_size, seed=seed)
        objects = self._draw_groups(rng, spec.entities, spec.relations, base, [], notes)
        background = self._choose(rng, spec.background, BACKGROUNDS, p.scene_accuracy, "plain")
        style = self._choose(rng, spec.style, STYLES, p.scene_accuracy, p.default_style)
        quality = float(np.clip(rng.normal(p.fidelity, 0.03), 0.0, 1.0))
        scene = replace(base, objects=tuple(objects), background=background, style=style, quality=quality,
                        history=(f"{self.name}: generate",))
        scene = replace(scene, artifacts=self._artifacts(rng, scene))
        return self._output(scene, seed, t0, "generate", notes)


class SimEditor(SimExpert):
    """A simulated editing expert (image-to-image): changes the scene graph it gets as ``state``.

    Supported ops come from its card: ``add``, ``remove``, ``recolor``, ``retexture``, ``resize``, ``move``,
    ``background``, ``restyle``, ``refine``. Every edit may leave blemishes near what it changed and caps the
    scene's quality at the card's ``fidelity``; ``refine`` raises quality and removes blemishes.

    Raises (on call):
        ValueError: ``state`` is not a SceneSim scene, or the command's target/value is unusable.
    """

    def __init__(self, name: str = "sim/editor", **kwargs: Any) -> None:
        super().__init__(name, kind="image-to-image", **kwargs)

    def _generate(self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
                  detections: Sequence[Any], **params: Any) -> ExpertOutput:
        t0 = time.perf_counter()
        parsed = self._parse(command)
        return self.execute(parsed, state, seed=seed, command=command, t0=t0)

    def execute(self, parsed: ParsedCommand, state: Any, *, seed: int, command: str = "",
                t0: float | None = None) -> ExpertOutput:
        """Run an already parsed edit on ``state``; ``command`` is its text (it seeds the randomness)."""
        t0 = time.perf_counter() if t0 is None else t0
        if not isinstance(state, Scene):
            raise ValueError(
                f"state={type(state).__name__ if state is not None else None} is not a SceneSim Scene; expert "
                f"{self.name!r} edits the scene graph of a previous SceneSim output (pass state=output.state)."
            )
        if parsed.op not in self.ops:
            raise ValueError(f"expert {self.name!r} cannot run op {parsed.op!r}; it supports {sorted(self.ops)}.")
        rng = self._rng(seed, command)
        notes: list[str] = []
        handler: Callable[[ParsedCommand, Scene, np.random.Generator, list[str]], tuple[Scene, list[Box]]]
        handler = getattr(self, f"_op_{parsed.op}")
        scene, touched = handler(parsed, state, rng, notes)
        p = self.profile
        if parsed.op in p.collateral_ops:
            scene = self._collateral(parsed, state, scene, rng, notes)
        if parsed.op == "refine":
            quality = float(np.clip(max(scene.quality, rng.normal(p.fidelity, 0.02)), 0.0, 1.0))
            arts = scene.artifacts
        else:
            quality = float(min(scene.quality, np.clip(rng.normal(p.fidelity, 0.02), 0.0, 1.0)))
            arts = scene.artifacts + self._artifacts(rng, scene, touched)
        scene = replace(scene, quality=quality, artifacts=arts, seed=seed,
                        history=(*state.history, f"{self.name}: {parsed.op}"))
        return self._output(scene, seed, t0, parsed.op, notes)

    # ------------------------------------------------------------------ targets
    def _targets(self, parsed: ParsedCommand, scene: Scene) -> list[int]:
        noun = parsed.noun
        if noun is None:
            if parsed.spec.entities:
                noun = parsed.spec.entities[0].noun
            else:
                raise ValueError(f"the {parsed.op} command names no object; say which, e.g. '{parsed.op}: the cup'.")
        idx = _ordered(scene, noun)
        if parsed.index is not None:  # 0-based, negative counts from the right ("the last clock" -> -1)
            return [idx[parsed.index]] if -len(idx) <= parsed.index < len(idx) else []
        return idx

    def _value(self, parsed: ParsedCommand, choices: Sequence[str], what: str) -> str:
        v = parsed.value
        if v is None:
            for e in parsed.spec.entities:
                v = getattr(e, what, None) or v
        if v not in choices:
            raise ValueError(
                f"the {parsed.op} command asks for {what}={v!r}; name one of {list(choices)}."
            )
        return str(v)

    def _edit_targets(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                      notes: list[str]) -> list[int]:
        """:meth:`_targets`, except that an ordinal target hits every object of its noun with ``ordinal_blind``."""
        targets = self._targets(parsed, scene)
        if parsed.index is None or self.profile.ordinal_blind <= 0.0:
            return targets
        every = self._targets(replace(parsed, index=None), scene)
        if len(every) > 1 and _hit(rng, self.profile.ordinal_blind):
            notes.append(f"could not single out one {scene.objects[every[0]].noun}; changed all {len(every)}")
            return every
        return targets

    def _found(self, rng: np.random.Generator, o: SceneObject, notes: list[str]) -> tuple[bool, bool]:
        """Grounding: (target found, target erased by a stray mask). No draw with the default cards."""
        p = self.profile
        small = o.size == "small"
        if _hit(rng, p.find_accuracy_small if small else p.find_accuracy):
            return True, False
        notes.append(f"could not find the {o.noun}")
        if small and _hit(rng, p.miss_erase_small):
            notes.append(f"the mask erased the small {o.noun}")
            return False, True
        return False, False

    def _ghost(self, rng: np.random.Generator, o: SceneObject) -> Artifact | None:
        """The blemish a removal leaves where ``o`` was, or None (no draw with the default cards)."""
        p = self.profile
        large = o.size == "large"
        if not _hit(rng, p.ghost_rate_large if large else p.ghost_rate):
            return None
        mean = p.ghost_strength_large if large else p.ghost_strength
        strength = float(np.clip(rng.normal(mean, 0.1), 0.05, 1.0))
        x1, y1, x2, y2 = o.box
        radius = 0.35 * min(x2 - x1, y2 - y1)
        return Artifact((x1 + x2) / 2.0, (y1 + y2) / 2.0, float(radius), strength, int(rng.integers(2**31)))

    def _near(self, scene: Scene, i: int) -> int | None:
        if len(scene.objects) < 2:
            return None
        c = np.array(scene.objects[i].center)
        d = [np.hypot(*(np.array(o.center) - c)) if j != i else np.inf for j, o in enumerate(scene.objects)]
        return int(np.argmin(d))

    # ------------------------------------------------------------------ ops
    def _op_add(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                notes: list[str]) -> tuple[Scene, list[Box]]:
        ents = parsed.spec.entities
        if not ents:
            raise ValueError("the add command names nothing to add; e.g. 'add: a blue dog right of the clock'.")
        extra: list[tuple[int, str, list[Box]]] = []
        p = self.profile
        crowded = p.crowd_threshold > 0 and len(scene.objects) >= p.crowd_threshold
        overlap = 0.0
        if p.crowded_relation_accuracy is not None:
            overlap = 1.0 if crowded else p.crowded_relation_accuracy
        if parsed.relation is not None and parsed.reference is not None and parsed.relation in RELATIONS:
            refs = [scene.objects[i].box for i in _ordered(scene, parsed.reference)]
            acc = p.relation_accuracy
            if crowded and p.crowded_relation_accuracy is not None:
                acc = p.crowded_relation_accuracy
                notes.append("crowded scene")
            if refs and rng.random() < acc:
                extra.append((0, parsed.relation, refs))
        occupied = [o.box for o in scene.objects]
        new = self._draw_groups(rng, ents, parsed.spec.relations, scene, occupied, notes, extra, overlap)
        return scene.with_objects(scene.objects + tuple(new)), [o.box for o in new]

    def _op_remove(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                   notes: list[str]) -> tuple[Scene, list[Box]]:
        targets = self._targets(parsed, scene)
        if parsed.count is not None and parsed.index is None:
            targets = targets[::-1][: parsed.count]  # the right-most ones
        gone: set[int] = set()
        ghosts: list[Artifact] = []
        for i in targets:
            found, erased = self._found(rng, scene.objects[i], notes)
            if not found:
                if erased:
                    gone.add(i)
                continue
            if rng.random() < self.profile.edit_accuracy:
                gone.add(i)
                ghost = self._ghost(rng, scene.objects[i])
                if ghost is not None:
                    ghosts.append(ghost)
        if len(gone) < len(targets):
            notes.append(f"left {len(targets) - len(gone)} object(s) in place")
        touched = [scene.objects[i].box for i in sorted(gone)]
        out = scene.with_objects(tuple(o for i, o in enumerate(scene.objects) if i not in gone))
        if ghosts:
            notes.append(f"left {len(ghosts)} ghost blemish(es)")
            out = replace(out, artifacts=out.artifacts + tuple(ghosts))
        return out, touched

    def _change(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator, notes: list[str],
                attr: str, value: str) -> tuple[Scene, list[Box]]:
        objs = list(scene.objects)
        touched: list[Box] = []
        p = self.profile
        erased: set[int] = set()
        boxes = [o.box for o in scene.objects]
        for i in self._edit_targets(parsed, scene, rng, notes):
            found, erase = self._found(rng, scene.objects[i], notes)
            if not found:
                if erase:
                    erased.add(i)
                    touched.append(objs[i].box)
                continue
            if rng.random() < p.edit_accuracy:
                objs[i] = _with_attr(objs[i], attr, value)
                touched.append(objs[i].box)
            else:
                notes.append(f"the {objs[i].noun} kept its {attr}")
            leak = p.attribute_leakage
            if p.crowded_leakage is not None and is_crowded(boxes, i):
                leak = p.crowded_leakage
            if rng.random() < leak:
                j = self._near(scene, i)
                if j is not None:
                    objs[j] = _with_attr(objs[j], attr, value)
                    notes.append(f"the {attr} leaked to the {objs[j].noun}")
                    touched.append(objs[j].box)
        if erased:
            objs = [o for i, o in enumerate(objs) if i not in erased]
        return scene.with_objects(tuple(objs)), touched

    def _op_recolor(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                    notes: list[str]) -> tuple[Scene, list[Box]]:
        return self._change(parsed, scene, rng, notes, "color", self._value(parsed, COLORS, "color"))

    def _op_retexture(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                      notes: list[str]) -> tuple[Scene, list[Box]]:
        return self._change(parsed, scene, rng, notes, "pattern", self._value(parsed, PATTERNS, "pattern"))

    def _relayout(self, scene: Scene, rng: np.random.Generator, notes: list[str], targets: list[int],
                  sizes: dict[int, str], cons_for: Callable[[list[Box]], list[Constraint]],
                  give_up: float = 0.0) -> tuple[Scene, list[Box]]:
        objs = list(scene.objects)
        keep = [o.box for i, o in enumerate(objs) if i not in targets]
        touched: list[Box] = []
        canvas = min(scene.width, scene.height)
        for i in targets:
            o = objs[i]
            size = sizes.get(i, o.size)
            w, h = _box_size(o, size, canvas, rng)
            cons = cons_for(keep)
            if not cons and size != o.size:  # resize in place when there is room
                cx, cy = o.center
                box0 = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
                inside = box0[0, 0] >= 0 and box0[0, 1] >= 0 and box0[0, 2] <= scene.width and box0[0, 3] <= scene.height
                if inside and free_mask(box0, np.asarray(keep).reshape(-1, 4))[0]:
                    box: Box | None = tuple(float(v) for v in box0[0])  # type: ignore[assignment]
                    met = True
                else:
                    box, met = place(rng, w, h, scene.width, scene.height, keep, cons)
            else:
                box, met = place(rng, w, h, scene.width, scene.height, keep, cons)
            if box is None:
                notes.append(f"no room to change the {o.noun}")
                keep.append(o.box)
                continue
            if cons and not met and _hit(rng, give_up):
                notes.append(f"no free room to move the {o.noun} as asked; left it in place")
                keep.append(o.box)
                continue
            if not met:
                notes.append(f"could not honour the relation of the {o.noun}")
            touched += [o.box, box]
            objs[i] = replace(o, box=box, size=size)
            keep.append(box)
        return scene.with_objects(tuple(objs)), touched

    def _op_resize(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                   notes: list[str]) -> tuple[Scene, list[Box]]:
        value = self._value(parsed, SIZES, "size")
        targets = [i for i in self._targets(parsed, scene) if rng.random() < self.profile.edit_accuracy]
        if _hit(rng, self.profile.joint_layout):
            return self._joint_relayout(scene, rng, notes, targets, [], dict.fromkeys(targets, value), None, False)
        return self._relayout(scene, rng, notes, targets, dict.fromkeys(targets, value), lambda keep: [])

    def _op_move(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                 notes: list[str]) -> tuple[Scene, list[Box]]:
        targets = self._targets(parsed, scene)
        rel, ref = parsed.relation, parsed.reference
        if rel is None or rel not in RELATIONS or ref is None:
            raise ValueError(
                f"the move command needs a relation and a reference (got relation={rel!r}, reference={ref!r}); "
                "e.g. 'move: put the dog right of the clock'."
            )
        ref_idx = [i for i in _ordered(scene, ref) if i not in targets]
        refs = [scene.objects[i].box for i in ref_idx]
        p = self.profile
        acc = p.relation_accuracy
        if p.relation_accuracy_large is not None and any(scene.objects[i].size == "large" for i in targets):
            acc = p.relation_accuracy_large
        honour = rng.random() < acc
        if not honour:
            notes.append("ignored the relation")
        if _hit(rng, p.joint_layout):
            return self._joint_relayout(scene, rng, notes, targets, ref_idx, {}, rel, honour)

        def cons_for(keep: list[Box]) -> list[Constraint]:
            return [Constraint(rel, np.asarray(b), True) for b in refs] if honour else []

        return self._relayout(scene, rng, notes, targets, {}, cons_for, p.fail_without_room)

    def _joint_relayout(self, scene: Scene, rng: np.random.Generator, notes: list[str], targets: list[int],
                        refs: list[int], sizes: dict[int, str], rel: str | None,
                        honour: bool) -> tuple[Scene, list[Box]]:
        """Re-lay out the targets and their references together (references first, in the zone that leaves room
        for the relation), pushing other objects aside when there is no free room; every re-laid-out object is
        regenerated (keeps its colour with ``keep_color``, its pattern with ``keep_pattern``)."""
        p = self.profile
        objs = list(scene.objects)
        width, height = scene.width, scene.height
        canvas = min(width, height)
        moving = [i for i in refs if i not in targets] + list(targets)
        fixed = [i for i in range(len(objs)) if i not in moving]
        placed: dict[int, Box] = {}
        touched: list[Box] = []
        zone = zone_for([rel]) if honour and rel is not None else FULL
        for i in moving:
            o = objs[i]
            size = sizes.get(i, o.size)
            w, h = _box_size(o, size, canvas, rng)
            is_target = i in targets
            cons = ([Constraint(rel, np.asarray(placed[j]), True) for j in refs if j in placed]
                    if honour and is_target and rel is not None else [])
            z = FULL if is_target else zone
            mine = list(placed.values())
            box, met = place(rng, w, h, width, height, [objs[j].box for j in fixed] + mine, cons, z)
            if box is None or (cons and not met):  # no free room: push the others aside
                box2, met2 = place(rng, w, h, width, height, mine, cons, z)
                if box2 is not None and (met2 or box is None):
                    box, met = box2, met2
                    notes.append(f"pushed objects aside for the {o.noun}")
            if box is None:
                notes.append(f"no room to change the {o.noun}")
                placed[i] = o.box
                continue
            if cons and not met:
                notes.append(f"could not honour the relation of the {o.noun}")
            placed[i] = box
            touched += [o.box, box]
            objs[i] = replace(o, box=box, size=size)
        new = np.asarray(list(placed.values()), dtype=np.float64).reshape(-1, 4)
        for j in fixed:
            b = objs[j].box
            if new.size and not free_mask(np.asarray([b]), new)[0]:
                others = [objs[k].box for k in range(len(objs)) if k != j]
                box, _ = place(rng, b[2] - b[0], b[3] - b[1], width, height, others, ())
                if box is not None:
                    notes.append(f"pushed the {objs[j].noun} aside")
                    touched += [b, box]
                    objs[j] = replace(objs[j], box=box)
        for i in moving:
            o = objs[i]
            if not _hit(rng, p.keep_color):
                others_c = [c for c in COLORS if c != o.color]
                o = replace(o, color=others_c[int(rng.integers(len(others_c)))])
                notes.append(f"the re-drawn {o.noun} changed colour")
            if not _hit(rng, p.keep_pattern):
                others_p = [q for q in PATTERNS if q != o.pattern]
                o = replace(o, pattern=others_p[int(rng.integers(len(others_p)))])
                notes.append(f"the re-drawn {o.noun} changed pattern")
            objs[i] = o
        return scene.with_objects(tuple(objs)), touched

    def _op_background(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                       notes: list[str]) -> tuple[Scene, list[Box]]:
        value = parsed.value if parsed.value is not None else parsed.spec.background
        if value not in BACKGROUNDS:
            raise ValueError(f"the background command asks for background={value!r}; name one of {list(BACKGROUNDS)}.")
        bg = self._choose(rng, value, BACKGROUNDS, self._scene_accuracy(), None)
        return self._drift(replace(scene, background=bg), rng, notes, self.profile.scene_drift), []

    def _op_restyle(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                    notes: list[str]) -> tuple[Scene, list[Box]]:
        value = parsed.value if parsed.value is not None else parsed.spec.style
        if value not in STYLES:
            raise ValueError(f"the restyle command asks for style={value!r}; name one of {list(STYLES)}.")
        st = self._choose(rng, value, STYLES, self._scene_accuracy(), None)
        return self._drift(replace(scene, style=st), rng, notes, self.profile.scene_drift), []

    def _op_refine(self, parsed: ParsedCommand, scene: Scene, rng: np.random.Generator,
                   notes: list[str]) -> tuple[Scene, list[Box]]:
        keep = tuple(a for a in scene.artifacts if not rng.random() < self.profile.artifact_removal)
        if len(keep) < len(scene.artifacts):
            notes.append(f"removed {len(scene.artifacts) - len(keep)} blemish(es)")
        return self._drift(replace(scene, artifacts=keep), rng, notes), []

    def _scene_accuracy(self) -> float:
        p = self.profile
        return p.edit_accuracy if p.scene_edit_accuracy is None else p.scene_edit_accuracy

    def _others(self, parsed: ParsedCommand, before: Scene, after: Scene) -> list[int]:
        """Indices in ``after`` of the objects the edit did not target (unmoved objects of ``before``)."""
        tgt: set[Box] = set()
        if parsed.op in ("remove", "recolor", "retexture", "resize", "move"):
            tgt = {before.objects[i].box for i in self._targets(parsed, before)}
        old = {o.box for o in before.objects}
        return [i for i, o in enumerate(after.objects) if o.box in old and o.box not in tgt]

    def _collateral(self, parsed: ParsedCommand, before: Scene, scene: Scene, rng: np.random.Generator,
                    notes: list[str]) -> Scene:
        """Side effects of a whole-image edit: one untargeted object drifts with ``collateral_drift`` per such
        object (capped), patterns go plain with ``detail_loss``, small objects vanish with ``small_vanish``."""
        p = self.profile
        others = self._others(parsed, before, scene)
        if (p.collateral_drift > 0.0 and others
                and _hit(rng, min(p.collateral_drift_cap, p.collateral_drift * len(others)))):
            scene = self._drift_object(scene, others[int(rng.integers(len(others)))], rng, notes)
        if p.detail_loss > 0.0:
            objs = list(scene.objects)
            for i, o in enumerate(objs):
                if _hit(rng, p.detail_loss) and o.pattern != "plain":
                    objs[i] = replace(o, pattern="plain")
                    notes.append(f"the {o.noun} lost its pattern")
            scene = scene.with_objects(tuple(objs))
        if p.small_vanish > 0.0:
            kept = []
            for o in scene.objects:
                if o.size == "small" and _hit(rng, p.small_vanish):
                    notes.append(f"the small {o.noun} vanished")
                else:
                    kept.append(o)
            scene = scene.with_objects(tuple(kept))
        return scene

    def _drift(self, scene: Scene, rng: np.random.Generator, notes: list[str], chance: float | None = None) -> Scene:
        """One random object drifts with ``chance`` (None: the card's ``drift``)."""
        if not scene.objects or not rng.random() < (self.profile.drift if chance is None else chance):
            return scene
        return self._drift_object(scene, int(rng.integers(len(scene.objects))), rng, notes)

    def _drift_object(self, scene: Scene, i: int, rng: np.random.Generator, notes: list[str]) -> Scene:
        """Object ``i`` drifts: a similar colour (0.7) or its pattern toggles (0.3)."""
        o = scene.objects[i]
        if rng.random() < 0.7:
            near = _SIMILAR[o.color]
            o2 = replace(o, color=near[int(rng.integers(len(near)))])
        else:
            o2 = replace(o, pattern="plain" if o.pattern != "plain" else PATTERNS[int(rng.integers(1, len(PATTERNS)))])
        notes.append(f"the {o.noun} drifted")
        objs = list(scene.objects)
        objs[i] = o2
        return scene.with_objects(tuple(objs))
