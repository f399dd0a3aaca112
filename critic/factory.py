"""The critic registry: build a critic from its configuration name.

Registered names (:data:`CRITICS`, a :class:`poser_env.core.registry.Registry` with entry-point group
``image_poser.critics``; a target must be a :class:`~poser_env.core.feedback.Critic` subclass):

* ``"scene"`` -> :class:`critic.scene.SceneCritic` (pixel critic of SceneSim images, no model),
* ``"vlm:<folder-or-hub-id>"`` -> :class:`critic.vlm.VLMCritic`,
* ``"clip:<folder-or-hub-id>"`` -> :class:`critic.clip.CLIPCritic`.

A third party registers ``"mine:<model>"`` with an entry point returning
``{"mine": {"target": "pkg.mod:MyCritic", "card": {"argument": "model"}}}``. Keyword arguments go to the
critic's constructor, except ``detector``: a folder or hub id of an OWL
detector (or a :class:`critic.detector_judge.DetectorJudge`) run beside a model-backed critic
(:class:`critic.detector_judge.GroundedCritic`), so region experts get the boxes of their targets; it is
built with the same device, dtype and ``local_files_only``. The model-loading arguments of :data:`MODEL_KWARGS` are dropped for critics whose card says
``model_free`` (``"scene"``), so one configuration works for every critic. Nothing heavy is imported or loaded here.
"""

from __future__ import annotations

from typing import Any

from critic.detector_judge import DetectorJudge, GroundedCritic
from poser_env.core.feedback import Critic
from poser_env.core.registry import Registry

__all__ = ["CRITICS", "CRITIC_FORMS", "MODEL_KWARGS", "make_critic"]

#: Critics by name.
CRITICS: Registry[Critic] = Registry("critic", entry_point_group="image_poser.critics", base=Critic)
CRITICS.register("scene", "critic.scene:SceneCritic",
                 card={"model_free": True, "summary": "pixel critic of SceneSim images (no model)"})
CRITICS.register("vlm", "critic.vlm:VLMCritic",
                 card={"argument": "model", "example": "vlm:/models/llava-1.5-7b-hf",
                       "summary": "yes/no questions to a vision-language model"})
CRITICS.register("clip", "critic.clip:CLIPCritic",
                 card={"argument": "model", "example": "clip:openai/clip-vit-large-patch14",
                       "summary": "CLIP similarity of each assertion against its negation"})

#: The accepted name forms of the shipped critics, for docs (``CRITICS.forms()`` includes plugins).
CRITIC_FORMS: tuple[str, ...] = ("scene", "vlm:<path-or-id>", "clip:<path-or-id>")
#: Arguments only model-backed critics take (ignored by critics whose card says ``model_free``).
MODEL_KWARGS: frozenset[str] = frozenset({"device", "dtype", "local_files_only", "trust_remote_code"})


def make_critic(name: str, **kwargs: Any) -> Critic:
    """The critic named ``name`` (see the module docstring), built with ``kwargs``.

    Raises:
        poser_env.core.registry.RegistryError: (a ValueError) an unknown name with "did you mean", a
            ``vlm:``/``clip:`` name without a model, or a target that is not a Critic subclass.
    """
    detector = kwargs.pop("detector", None)
    head, _ = CRITICS.split(name)
    model_free = bool(CRITICS.entry(head).card.get("model_free"))
    if model_free:
        kwargs = {k: v for k, v in kwargs.items() if k not in MODEL_KWARGS}
    critic = CRITICS.make(name, **kwargs)
    if not isinstance(critic, Critic):  # a factory target would be refused by resolve(); defensive
        raise TypeError(f"critic={name!r} built a {type(critic).__name__}, not a Critic.")
    if detector is None:
        return critic
    if model_free:
        raise ValueError(f"detector={detector!r} goes with a model-backed critic (vlm:/clip:), not critic={name!r}: "
                         "the scene critic finds its own boxes. Drop detector=.")
    if not isinstance(detector, DetectorJudge):
        dkw = {k: v for k, v in kwargs.items() if k in ("device", "local_files_only", "trust_remote_code")}
        if kwargs.get("dtype") is not None:
            dkw["dtype"] = kwargs["dtype"]
        detector = DetectorJudge(detector, **dkw)
    return GroundedCritic(critic, detector)
