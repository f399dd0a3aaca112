"""Build a critic from its configuration name.

Accepted names:

* ``"scene"`` -> :class:`critic.scene.SceneCritic` (pixel critic of SceneSim images, no model),
* ``"vlm:<folder-or-hub-id>"`` -> :class:`critic.vlm.VLMCritic`,
* ``"clip:<folder-or-hub-id>"`` -> :class:`critic.clip.CLIPCritic`.

Keyword arguments go to the critic's constructor, except ``detector``: a folder or hub id of an OWL
detector (or a :class:`critic.detector_judge.DetectorJudge`) run beside a ``vlm:``/``clip:`` critic
(:class:`critic.detector_judge.GroundedCritic`), so region experts get the boxes of their targets; it is
built with the same device, dtype and ``local_files_only``. The model-loading arguments of :data:`MODEL_KWARGS`
(``device``, ``dtype``, ``local_files_only``, ``trust_remote_code``) are dropped for ``"scene"``, which runs
no model, so one configuration works for every critic. Nothing heavy is imported or loaded here.
"""

from __future__ import annotations

import difflib
from typing import Any

from critic.feedback import Critic

__all__ = ["CRITIC_FORMS", "MODEL_KWARGS", "make_critic"]

#: The accepted name forms, for error messages and docs.
CRITIC_FORMS: tuple[str, ...] = ("scene", "vlm:<path-or-id>", "clip:<path-or-id>")
_PREFIXES = ("scene", "vlm", "clip")
#: Arguments only model-backed critics take (ignored by ``"scene"``).
MODEL_KWARGS: frozenset[str] = frozenset({"device", "dtype", "local_files_only", "trust_remote_code"})


def make_critic(name: str, **kwargs: Any) -> Critic:
    """The critic named ``name`` (see the module docstring), built with ``kwargs``.

    Raises:
        ValueError: an unknown name or a ``vlm:``/``clip:`` name without a model (the message lists the
            accepted forms and suggests the closest one).
    """
    if not isinstance(name, str):
        raise ValueError(f"critic name={name!r} must be a string, one of {list(CRITIC_FORMS)}.")
    key = name.strip()
    head, sep, model = key.partition(":")
    if key == "scene":
        from critic.scene import SceneCritic

        return SceneCritic(**{k: v for k, v in kwargs.items() if k not in MODEL_KWARGS})
    if sep and head in ("vlm", "clip"):
        detector = kwargs.pop("detector", None)
        if detector is not None:
            from critic.detector_judge import DetectorJudge, GroundedCritic

            inner = make_critic(name, **kwargs)
            if not isinstance(detector, DetectorJudge):
                dkw = {k: v for k, v in kwargs.items() if k in ("device", "local_files_only", "trust_remote_code")}
                if kwargs.get("dtype") is not None:
                    dkw["dtype"] = kwargs["dtype"]
                detector = DetectorJudge(detector, **dkw)
            return GroundedCritic(inner, detector)
        if not model.strip():
            raise ValueError(
                f"critic name={name!r} names no model; write '{head}:<folder-or-hub-id>', e.g. "
                f"'{head}:{'/models/llava-1.5-7b-hf' if head == 'vlm' else 'openai/clip-vit-large-patch14'}'."
            )
        if head == "vlm":
            from critic.vlm import VLMCritic

            return VLMCritic(model.strip(), **kwargs)
        from critic.clip import CLIPCritic

        return CLIPCritic(model.strip(), **kwargs)
    guess = difflib.get_close_matches(head.lower(), _PREFIXES, n=1, cutoff=0.5)
    hint = ""
    if guess:
        g = guess[0]
        hint = f" Did you mean {g!r}?" if g == "scene" else f" Did you mean '{g}:{model or '<path-or-id>'}'?"
    raise ValueError(f"unknown critic name={name!r}; accepted forms: {list(CRITIC_FORMS)}.{hint}")
