"""The ground-truth judge: GenEval's rules applied to SceneSim's scene graph (evaluation only).

The judge reads :class:`experts.sim.scene.Scene` (objects, background, style, artifacts), turns every object
into a :class:`~poser_env.core.feedback.Detection` with score 1.0 and its true colour, pattern and size, and applies
:func:`poser_env.core.rules.evaluate`. It is used only to *report* results: the env's reward and feedback come from a
pixel critic, which never reads the scene graph.

Example::

    judge = SceneJudge()
    fb = judge(output.state, spec)
    is_pass(fb), fb.alignment
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from experts.sim.scene import Scene
from poser_env.core.feedback import Detection, Feedback
from poser_env.core.rules import evaluate
from poser_env.core.spec import GENEVAL_TAGS, Spec

__all__ = ["SceneJudge", "geneval_overall", "is_pass", "scene_detections", "scene_fidelity"]

#: Fidelity lost per artifact of strength 1 whose disc covers 1% of the canvas (saturating, see scene_fidelity).
ARTIFACT_WEIGHT: float = 0.12


def scene_detections(scene: Scene) -> tuple[Detection, ...]:
    """Ground-truth detections (score 1.0, true attributes) of every object of ``scene``, back to front."""
    return tuple(
        Detection(label=o.noun, box=tuple(float(v) for v in o.box), score=1.0,  # type: ignore[arg-type]
                  color=o.color, pattern=o.pattern, size=o.size)
        for o in scene.objects
    )


def scene_fidelity(scene: Scene) -> float:
    """Image quality in [0, 1]: ``scene.quality`` times a factor per artifact.

    Each artifact multiplies fidelity by ``1 - ARTIFACT_WEIGHT * strength * min(1, sqrt(area / 1% canvas))``,
    so a strong blemish covering 1% or more of the canvas costs 12%, a tiny faint one almost nothing.
    """
    area = float(scene.width * scene.height)
    f = float(scene.quality)
    for a in scene.artifacts:
        cover = min(1.0, math.sqrt(math.pi * a.radius**2 / (0.01 * area)))
        f *= 1.0 - ARTIFACT_WEIGHT * min(max(a.strength, 0.0), 1.0) * cover
    return min(max(f, 0.0), 1.0)


def _aesthetics(scene: Scene) -> float:
    """Composition score in [0, 1]: objects' centre of mass near the canvas centre, and no empty canvas."""
    if not scene.objects:
        return 0.0
    cx = sum(o.center[0] for o in scene.objects) / len(scene.objects) / scene.width - 0.5
    cy = sum(o.center[1] for o in scene.objects) / len(scene.objects) / scene.height - 0.5
    balance = 1.0 - min(1.0, 2.0 * math.hypot(cx, cy))
    return min(1.0, max(0.0, 0.5 * balance + 0.5 * scene.quality))


class SceneJudge:
    """Judge a SceneSim scene against a spec with GenEval's rules on ground truth.

    ``judge(scene, spec) -> Feedback`` whose verdicts follow ``spec.assertions()``; ``alignment`` is the
    fraction of verdicts that hold (in [0, 1]); ``fidelity`` is :func:`scene_fidelity`; ``aesthetics`` a
    simple composition score. Stateless and deterministic.
    """

    name = "scene-judge"

    def __call__(self, scene: Scene, spec: Spec) -> Feedback:
        """Judge ``scene`` against ``spec``.

        Raises:
            ValueError: ``scene`` is not a Scene (e.g. an ExpertOutput: pass ``output.state``) or ``spec``
                is not a Spec.
        """
        if not isinstance(scene, Scene):
            raise ValueError(
                f"scene must be an experts.sim.scene.Scene, got {type(scene).__name__}; pass a SceneSim "
                "expert output's .state."
            )
        if not isinstance(spec, Spec):
            raise ValueError(f"spec must be a poser_env.core.spec.Spec, got {type(spec).__name__}; parse the prompt first.")
        dets = scene_detections(scene)
        verdicts = evaluate(spec, dets, background=scene.background, style=scene.style,
                            width=scene.width, height=scene.height)
        alignment = sum(v.ok for v in verdicts) / len(verdicts) if verdicts else 1.0
        failing = [v.reason for v in verdicts if not v.ok]
        text = "all assertions hold" if not failing else "; ".join(failing)
        return Feedback(
            verdicts=verdicts,
            alignment=alignment,
            fidelity=scene_fidelity(scene),
            aesthetics=_aesthetics(scene),
            text=text,
            detections=dets,
            background=scene.background,
            style=scene.style,
            metadata={"judge": self.name},
        )


def is_pass(feedback: Feedback) -> bool:
    """GenEval's per-image pass: every assertion holds (an empty verdict list passes)."""
    if not isinstance(feedback, Feedback):
        raise ValueError(f"feedback must be a poser_env.core.feedback.Feedback, got {type(feedback).__name__}.")
    return all(v.ok for v in feedback.verdicts)


def geneval_overall(results: Mapping[str, Sequence[bool]]) -> float:
    """GenEval's overall score: the unweighted mean over tags of each tag's pass rate, in [0, 1].

    Args:
        results: tag -> per-image pass/fail (any tags; GenEval's are :data:`poser_env.core.spec.GENEVAL_TAGS`).

    Raises:
        ValueError: no tags, or a tag with no images.
    """
    if not results:
        raise ValueError(f"results={dict(results)!r} is empty; pass {{tag: [passed, ...]}}, e.g. tags {GENEVAL_TAGS}.")
    accs = []
    for tag, passed in results.items():
        if len(passed) == 0:
            raise ValueError(f"results[{tag!r}] is empty; every tag needs at least one image.")
        accs.append(sum(bool(p) for p in passed) / len(passed))
    return sum(accs) / len(accs)
