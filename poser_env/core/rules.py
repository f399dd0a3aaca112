"""GenEval's scoring rules on detections, extended to every assertion kind of a :class:`~poser_env.core.spec.Spec`.

Both the pixel critic (detections found in pixels, with scores) and the ground-truth judge (detections read
from the scene graph, score 1.0) call :func:`evaluate`, so the two differ only in what they see.

GenEval's rules (``djghosh13/geneval``, ``evaluation/evaluate_images.py``), kept exactly:

* Detections of each class are kept when their score is above 0.3 (0.9 when the spec's tag is
  ``"counting"``), best first, at most 16 per class.
* Presence / count: the top ``count`` detections of the group must exist (``count`` assertions mean "at
  least"; exactness comes from an exclusion of ``count + 1``, as in GenEval's counting metadata).
* Exclusion: fewer than ``count`` kept detections of the noun.
* Colour: each of the top ``count`` detections of the group has the requested colour.
* Position (:func:`relation_holds`), boxes ``(x1, y1, x2, y2)`` in pixels, y down: ``offset = centre_A -
  centre_B``; each axis is shrunk toward zero by ``0.1 * (extent_A + extent_B)``; if both shrunk components
  are below 1e-3 no relation holds; otherwise the shrunk offset is divided by the length of the *unshrunk*
  offset and ``left of`` is ``dx < -0.5``, ``right of`` ``dx > 0.5``, ``above`` ``dy < -0.5``, ``below``
  ``dy > 0.5``. Every counted member of the subject group must stand in the relation to every counted member
  of the reference group, and the reference group must itself be detected (else the relation fails).

Extensions (this project's, documented here):

* Pattern and size are checked like colour, on each of the top ``count`` detections. A detection without a
  size gets one from its box: the mean of its sides over the canvas's shorter side, classified with the
  midpoints between :data:`experts.sim.scene.SIZE_FRACTION` classes as thresholds.
* ``next to``: ``left of`` or ``right of`` holds (GenEval geometry) and the horizontal gap between the boxes
  (0 when they overlap in x) is at most the mean of the two widths.
* ``on top of``: ``above`` holds, A's centre x lies within B's x-range, and the vertical gap between A's
  bottom and B's top is at most ``0.25 * (height_A + height_B)``.
* ``under``: ``below`` holds, A's centre x lies within B's x-range, and the gap between B's bottom and A's
  top is at most ``0.25 * (height_A + height_B)``.
* Background and style: equality with what the caller saw (``None`` -> verdict ``"unknown"``).
* Groups that share a noun ("a red cup left of a blue cup"): the noun's kept detections are shared out
  between the groups, the most specific group first (most of colour/pattern/size given; ties in spec
  order); each group takes the unassigned detections that match the most of its requested attributes,
  best score first, up to its count. A group with no attributes thus takes what the others left.

Confidence: a ``"yes"`` verdict carries the lowest score of the detections that support it (1.0 when none
are needed); a ``"no"`` verdict carries ``1 -`` the lowest score of the detections that contradict it, or 0.0
when something is missing. With the judge's scores of 1.0 these are exactly 1.0 and 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from poser_env.core.feedback import Detection, Verdict
from poser_env.core.geometry import geneval_relations, relation_holds, size_of_box
from poser_env.core.spec import OPEN_KINDS, Assertion, Spec

__all__ = [
    "COUNTING_THRESHOLD",
    "MAX_PER_CLASS",
    "SCORE_THRESHOLD",
    "assign_groups",
    "evaluate",
]

#: Detections at or below this score are ignored (GenEval).
SCORE_THRESHOLD: float = 0.3
#: ... for the ``counting`` task (GenEval).
COUNTING_THRESHOLD: float = 0.9
#: At most this many detections per class are kept (GenEval).
MAX_PER_CLASS: int = 16
#: Position margin: each axis offset is shrunk by this times the summed extents (GenEval).


def _kept(detections: Sequence[Detection], threshold: float) -> dict[str, list[Detection]]:
    by_label: dict[str, list[Detection]] = {}
    for d in detections:
        if d.score > threshold:
            by_label.setdefault(d.label.strip().lower(), []).append(d)
    # stable sort: best score first, ties keep input order
    return {k: sorted(v, key=lambda d: -d.score)[:MAX_PER_CLASS] for k, v in by_label.items()}


def _attr(det: Detection, name: str, width: int, height: int) -> str | None:
    if name == "size" and det.size is None:
        return size_of_box(det.box, width, height)
    return getattr(det, name)  # type: ignore[no-any-return]


def assign_groups(
    spec: Spec, detections: Sequence[Detection], *, threshold: float, width: int, height: int
) -> list[list[Detection]]:
    """The detections counted for each entity group of ``spec`` (at most ``count`` each, best first).

    Shares the kept detections of a noun between the groups that use it (see the module docstring).
    """
    kept = _kept(detections, threshold)
    groups: list[list[Detection]] = [[] for _ in spec.entities]
    by_noun: dict[str, list[int]] = {}
    for i, e in enumerate(spec.entities):
        by_noun.setdefault(e.noun.strip().lower(), []).append(i)
    for noun, idxs in by_noun.items():
        pool = list(kept.get(noun, []))
        if len(idxs) == 1:
            groups[idxs[0]] = pool[: spec.entities[idxs[0]].count]
            continue

        def n_attrs(i: int) -> int:
            e = spec.entities[i]
            return sum(v is not None for v in (e.color, e.pattern, e.size))

        for i in sorted(idxs, key=lambda i: (-n_attrs(i), i)):
            e = spec.entities[i]
            wanted = [(k, v) for k, v in (("color", e.color), ("pattern", e.pattern), ("size", e.size)) if v]

            def match(d: Detection, wanted: list[tuple[str, str]] = wanted) -> int:
                return sum(_attr(d, k, width, height) == v for k, v in wanted)

            order = sorted(range(len(pool)), key=lambda j: (-match(pool[j]), -pool[j].score, j))
            take = order[: e.count]
            groups[i] = sorted((pool[j] for j in take), key=lambda d: -d.score)
            pool = [d for j, d in enumerate(pool) if j not in set(take)]
    return groups


def _min_score(dets: Sequence[Detection]) -> float:
    return float(min((d.score for d in dets), default=1.0))


def evaluate(
    spec: Spec,
    detections: Sequence[Detection],
    *,
    background: str | None = None,
    style: str | None = None,
    width: int,
    height: int,
    threshold: float | None = None,
) -> tuple[Verdict, ...]:
    """One :class:`~poser_env.core.feedback.Verdict` per ``spec.assertions()``, in that order (rules in the module doc).

    Args:
        spec: What the prompt asks for.
        detections: Objects found (label = singular noun, box in pixels, score in [0, 1], attributes).
        background: The background seen, or None when unknown (background verdict ``"unknown"``).
        style: The style seen, or None when unknown.
        width, height: Canvas size in pixels (>= 1), used to classify sizes of detections without one.
        threshold: Score a detection must exceed; default 0.3, or 0.9 when ``spec.tag == "counting"``.

    Raises:
        ValueError: a non-positive ``width``/``height`` or a ``threshold`` outside [0, 1].
    """
    for arg, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{arg}={v!r} must be a positive int (canvas size in pixels).")
    if threshold is None:
        threshold = COUNTING_THRESHOLD if spec.tag == "counting" else SCORE_THRESHOLD
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} must be in [0, 1] (a detection score).")
    kept = _kept(detections, threshold)
    groups = assign_groups(spec, detections, threshold=threshold, width=width, height=height)
    present = [len(g) >= e.count for g, e in zip(groups, spec.entities)]
    return tuple(
        _verdict(a, spec, groups, present, kept, background, style, width, height) for a in spec.assertions()
    )


def _verdict(
    a: Assertion,
    spec: Spec,
    groups: list[list[Detection]],
    present: list[bool],
    kept: dict[str, list[Detection]],
    background: str | None,
    style: str | None,
    width: int,
    height: int,
) -> Verdict:
    def yes(reason: str, conf: float = 1.0) -> Verdict:
        return Verdict(a.id, "yes", conf, reason, a.kind)

    def no(reason: str, conf: float = 0.0) -> Verdict:
        return Verdict(a.id, "no", conf, reason, a.kind)

    if a.kind in ("exists", "count"):
        assert a.entity is not None
        e, g = spec.entities[a.entity], groups[a.entity]
        if present[a.entity]:
            return yes(f"found {e.count} {e.noun}", _min_score(g))
        return no(f"found {len(g)} of {e.count} {e.noun}")
    if a.kind in ("color", "pattern", "size"):
        assert a.entity is not None
        e, g = spec.entities[a.entity], groups[a.entity]
        if not present[a.entity]:
            return no(f"found {len(g)} of {e.count} {e.noun}, so its {a.kind} cannot hold")
        wrong = [d for d in g if _attr(d, a.kind, width, height) != a.value]
        if wrong:
            seen = ", ".join(str(_attr(d, a.kind, width, height)) for d in wrong)
            return no(f"the {e.noun} is {seen}, expected {a.value}", 1.0 - _min_score(wrong))
        return yes(f"the {e.noun} is {a.value}", _min_score(g))
    if a.kind == "relation":
        assert a.entity is not None and a.reference is not None and a.value is not None
        s, r = spec.entities[a.entity], spec.entities[a.reference]
        if not present[a.reference]:
            return no(f"no {r.noun} found to be {a.value}")
        if not present[a.entity]:
            return no(f"found {len(groups[a.entity])} of {s.count} {s.noun}")
        for ds in groups[a.entity]:
            for dr in groups[a.reference]:
                if not relation_holds(ds.box, dr.box, a.value):
                    rels = sorted(geneval_relations(ds.box, dr.box)) or ["overlapping"]
                    return no(
                        f"the {s.noun} is {' and '.join(rels)} the {r.noun}, expected {a.value}",
                        1.0 - min(ds.score, dr.score),
                    )
        return yes(f"the {s.noun} is {a.value} the {r.noun}", _min_score(groups[a.entity] + groups[a.reference]))
    if a.kind == "exclusion":
        assert a.value is not None and a.count is not None
        found = kept.get(a.value.strip().lower(), [])
        if len(found) >= a.count:
            extra = found[: a.count]
            return no(f"found {len(found)} {a.value}, expected fewer than {a.count}", 1.0 - _min_score(extra))
        return yes(f"found {len(found)} {a.value}, fewer than {a.count}")
    if a.kind in ("background", "style"):
        got = background if a.kind == "background" else style
        if got is None:
            return Verdict(a.id, "unknown", 0.5, f"{a.kind} not recognised", a.kind)
        if got == a.value:
            return yes(f"the {a.kind} is {got}")
        return no(f"the {a.kind} is {got}, expected {a.value}")
    if a.kind in OPEN_KINDS:  # open spec: words outside the closed vocabulary, for VLM critics
        return Verdict(a.id, "unknown", 0.5, f"open assertion {a.text!r}: the rules read only SceneSim's "
                       "vocabulary; judge it with a VLM critic", a.kind)
    raise ValueError(f"assertion kind={a.kind!r} is not handled; expected one of the spec's kinds.")  # pragma: no cover
