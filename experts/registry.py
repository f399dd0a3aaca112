"""The expert registry: names -> experts, loaded from the shipped SceneSim cards and entry points.

``EXPERTS`` holds every SceneSim expert of ``experts/sim/cards.toml`` (behaviour numbers in ``kwargs``,
descriptive facts in ``card``); third parties add theirs through the ``image_poser.experts`` entry-point
group or :meth:`poser_env.core.registry.Registry.load_toml`. Building is cheap: nothing heavy happens until an
expert's first call.

Example::

    from experts.registry import make_expert, default_sim_experts
    layout = make_expert("sim/layout", canvas_size=256)
    experts = default_sim_experts()          # T2I experts first, then editors, fixed order

Card version 2 (``experts/sim/cards_v2.toml``, the SceneSim v1 world's 14 context-dependent experts) is a separate
registry, not merged into ``EXPERTS``: ``sim_cards(2)`` and ``expert_names(2)``::

    reg = sim_cards(2)
    flux = make_expert("sim/flux", registry=reg)
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from experts.sim.experts import SimExpert, SimProfile
from poser_env.core.commands import OPS
from poser_env.core.expert import Expert
from poser_env.core.registry import Registry, RegistryError, import_target

__all__ = [
    "CARDS_PATH",
    "CARDS_V2_PATH",
    "CARD_VERSION",
    "CARD_VERSIONS",
    "EXPERTS",
    "REQUIRED_BY_OP",
    "REQUIRED_BY_OP_V2",
    "REQUIRED_FIELDS",
    "SIM_EXPERT_NAMES",
    "card_hash",
    "check_sim_card",
    "default_expert_names",
    "default_sim_experts",
    "expert_names",
    "load_sim_cards",
    "make_expert",
    "model_card_table",
    "sim_cards",
]

#: The shipped SceneSim registry file.
CARDS_PATH: Path = Path(__file__).resolve().parent / "sim" / "cards.toml"
#: The card-version-2 registry file (the SceneSim v1 world: 14 experts with context-dependent strengths).
CARDS_V2_PATH: Path = Path(__file__).resolve().parent / "sim" / "cards_v2.toml"
#: The shipped card files by version.
CARD_VERSIONS: Mapping[int, Path] = MappingProxyType({1: CARDS_PATH, 2: CARDS_V2_PATH})

#: Card fields every SceneSim expert must set (a missing one is an error naming the field and the file: a card
#: without ``cost`` must not silently cost 1.0).
REQUIRED_FIELDS: tuple[str, ...] = ("cost", "ops", "fidelity", "artifacts")
#: Further card fields an expert must set for each op it supports: the numbers that op reads. A card without
#: ``count_accuracy`` must not silently count perfectly.
REQUIRED_BY_OP: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "generate": ("max_entities", "entity_drop", "count_limit", "count_accuracy", "count_accuracy_beyond",
                 "color_binding", "binding_decay", "attribute_leakage", "attribute_accuracy", "relation_accuracy",
                 "scene_accuracy", "artifact_strength", "glyph_noise", "default_style"),
    "add": ("count_accuracy", "color_binding", "attribute_accuracy", "relation_accuracy"),
    "remove": ("edit_accuracy",),
    "recolor": ("edit_accuracy", "attribute_leakage"),
    "retexture": ("edit_accuracy", "attribute_leakage"),
    "resize": ("edit_accuracy",),
    "move": ("edit_accuracy", "relation_accuracy"),
    "background": ("edit_accuracy",),
    "restyle": ("edit_accuracy", "drift"),
    "refine": ("artifact_removal", "drift"),
})
_COLLATERAL = ("collateral_ops", "collateral_drift", "collateral_drift_cap", "detail_loss", "small_vanish")
_FIND = ("find_accuracy", "find_accuracy_small", "miss_erase_small")
#: Card version >= 2: the context fields each op reads, required on top of :data:`REQUIRED_BY_OP` (a version-2
#: card without ``crowded_leakage`` must not silently leak the same in a crowded scene).
REQUIRED_BY_OP_V2: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "generate": (),
    "add": ("crowd_threshold", "crowded_relation_accuracy", *_COLLATERAL),
    "remove": (*_FIND, "ghost_rate", "ghost_strength", "ghost_rate_large", "ghost_strength_large", *_COLLATERAL),
    "recolor": ("ordinal_blind", "crowded_leakage", *_FIND, *_COLLATERAL),
    "retexture": ("ordinal_blind", "crowded_leakage", *_FIND, *_COLLATERAL),
    "resize": ("joint_layout", "keep_color", "keep_pattern", *_COLLATERAL),
    "move": ("relation_accuracy_large", "fail_without_room", "joint_layout", "keep_color", "keep_pattern",
             *_COLLATERAL),
    "background": ("scene_edit_accuracy", "scene_drift", "drift", *_COLLATERAL),
    "restyle": ("scene_edit_accuracy", "scene_drift", *_COLLATERAL),
    "refine": _COLLATERAL,
})


def check_sim_card(name: str, kwargs: Mapping[str, Any], source: str, *, card_version: int = 1) -> None:
    """Check one SceneSim card's behaviour numbers: ``ops`` a list of known ops, every required field present
    (:data:`REQUIRED_FIELDS`, :data:`REQUIRED_BY_OP`, and for ``card_version >= 2`` :data:`REQUIRED_BY_OP_V2`).

    Raises:
        RegistryError: naming the field, the entry and the file.
    """
    where = f"SceneSim card [{name}] in {source}"
    ops = kwargs.get("ops")
    if "ops" not in kwargs:
        raise RegistryError(f"{where} has no 'ops'; add e.g. ops = [\"generate\"].")
    if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not ops or not all(
            isinstance(o, str) for o in ops):
        raise RegistryError(
            f"{where}: ops={ops!r} must be a non-empty list of op names, e.g. ops = [{str(ops)!r}] "
            if isinstance(ops, str) else f"{where}: ops={ops!r} must be a non-empty list of op names, "
            f"e.g. ops = [\"generate\"]; known ops: {list(OPS)}."
        )
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise RegistryError(f"{where}: ops entries {bad} are not ops; known ops: {list(OPS)}.")
    missing = [f for f in REQUIRED_FIELDS if f not in kwargs]
    for op in ops:
        missing += [f for f in REQUIRED_BY_OP.get(op, ()) if f not in kwargs and f not in missing]
        if card_version >= 2:
            missing += [f for f in REQUIRED_BY_OP_V2.get(op, ()) if f not in kwargs and f not in missing]
    if missing:
        raise RegistryError(
            f"{where} is missing required field(s) {missing} (needed by ops {list(ops)}); set each in its kwargs "
            "table (see experts.sim.experts.SimProfile for their meaning)."
        )


def load_sim_cards(path: str | os.PathLike[str], *, base: Registry[Expert] | None = None) -> Registry[Expert]:
    """A registry of the SceneSim cards in the TOML file ``path`` (checked with :func:`check_sim_card`).

    Used by the env's ``cards=`` argument, so that a custom card file applies to one env, not the whole process.
    ``base``: a registry whose entries are copied first (the file's entries must not reuse their names).

    Raises:
        RegistryError: a missing or malformed file, a missing required field (named with the file).
    """
    reg: Registry[Expert] = Registry("expert", base=Expert)
    if base is not None:
        for n in base.names():
            e = base.entry(n)
            reg.register(n, e.target, e.kwargs, e.card, source=e.source)
    before = set(reg.names())
    names = reg.load_toml(Path(path))
    version = _card_version(Path(path)) if names else 1
    for n in names:
        if n in before:
            continue
        e = reg.entry(n)
        if _is_sim(e.target):
            check_sim_card(n, e.kwargs, str(path), card_version=version)
            if version >= 2 and e.card.get("card_version") != version:
                raise RegistryError(
                    f"SceneSim card [{n}] in {path}: card.card_version={e.card.get('card_version')!r} differs from "
                    f"the file's card_version = {version}; set card_version = {version} in its card table."
                )
    return reg


def _card_version(path: Path) -> int:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    v = data.get("card_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise RegistryError(f"card file {str(path)!r}: card_version={v!r} must be an int; add card_version = 1.")
    return v


def _is_sim(target: str) -> bool:
    obj = import_target(target)
    return isinstance(obj, type) and issubclass(obj, SimExpert)


#: Version of the shipped cards (bumped on any change of behaviour).
CARD_VERSION: int = _card_version(CARDS_PATH)

#: The process-wide expert registry: the shipped SceneSim cards, then entry points (``image_poser.experts``).
EXPERTS: Registry[Expert] = Registry("expert", entry_point_group="image_poser.experts", base=Expert)
_SHIPPED: Registry[Expert] = load_sim_cards(CARDS_PATH)
for _name in _SHIPPED.names():
    _entry = _SHIPPED.entry(_name)
    EXPERTS.register(_name, _entry.target, _entry.kwargs, _entry.card, source=_entry.source)
#: SceneSim experts in the fixed default order: text-to-image first, then editors.
SIM_EXPERT_NAMES: tuple[str, ...] = tuple(_SHIPPED.names())


def card_hash(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of the bytes of the card file ``path`` (to pin a card version in a README or a run).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_version(version: int) -> None:
    if isinstance(version, bool) or version not in CARD_VERSIONS:
        raise ValueError(f"version={version!r} is not a shipped card version; use one of {sorted(CARD_VERSIONS)}.")


@cache
def _v2_registry() -> Registry[Expert]:
    reg = load_sim_cards(CARDS_V2_PATH)
    if _card_version(CARDS_V2_PATH) != 2:
        raise RegistryError(f"{CARDS_V2_PATH} must have card_version = 2.")
    clash = sorted(set(reg.names()) & set(SIM_EXPERT_NAMES))
    if clash:
        raise RegistryError(f"{CARDS_V2_PATH} reuses version-1 names {clash}; v2 names must be disjoint.")
    return reg


def sim_cards(version: int) -> Registry[Expert]:
    """The SceneSim registry of a card version: 1 -> :data:`EXPERTS` (unchanged), 2 -> the 14 experts of
    ``experts/sim/cards_v2.toml`` only (no version-1 entries; loaded once and shared, do not register into it).

    Raises:
        ValueError: an unknown ``version``.
    """
    _check_version(version)
    return EXPERTS if version == 1 else _v2_registry()


def expert_names(version: int) -> tuple[str, ...]:
    """Names of the SceneSim experts of a card version in card order (text-to-image first, then editors).

    Raises:
        ValueError: an unknown ``version``.
    """
    _check_version(version)
    if version == 1:
        return SIM_EXPERT_NAMES
    reg = _v2_registry()
    names = tuple(reg.names())
    t2i = tuple(n for n in names if "generate" in reg.entry(n).kwargs.get("ops", ()))
    return t2i + tuple(n for n in names if n not in t2i)


def make_expert(name: str, *, registry: Registry[Expert] | None = None, **overrides: Any) -> Expert:
    """Build the expert registered as ``name``; ``overrides`` replace card numbers or set ``canvas_size``.

    Args:
        name: A registry name (``"sim/layout"``).
        registry: Where to look it up (default: the process-wide :data:`EXPERTS`; an env with ``cards=`` passes
            its own, see :func:`load_sim_cards`).
        **overrides: Card numbers or constructor arguments.

    Raises:
        RegistryError: an unknown name (with "did you mean ..."), a target that is not an Expert subclass, a
            SceneSim card (from a plugin or a file) missing a required field.
        ValueError: a bad override (named in the message).
    """
    reg = EXPERTS if registry is None else registry
    entry = reg.entry(name)
    factory = reg.resolve(name)
    if isinstance(overrides.get("ops"), str):
        raise RegistryError(
            f"expert name={name!r}: ops={overrides['ops']!r} must be a list of op names, e.g. ops=[{overrides['ops']!r}]."
        )
    if isinstance(factory, type) and issubclass(factory, SimExpert):
        if entry.source.startswith("entry-point:"):
            check_sim_card(name, entry.kwargs, entry.source)  # plugin cards: the same required fields as files
        # SceneSim experts also get their registry name and descriptive card
        expert = factory(**{"name": name, "card": dict(entry.card), **entry.kwargs, **overrides})
    else:
        expert = factory(**{**entry.kwargs, **overrides})
    if not isinstance(expert, Expert):
        raise RegistryError(f"expert name={name!r}: target {entry.target!r} built a {type(expert).__name__}, not an Expert.")
    return expert


def default_expert_names() -> tuple[str, ...]:
    """Names of the shipped SceneSim experts, text-to-image first (the env's default action set)."""
    return SIM_EXPERT_NAMES


def default_sim_experts(canvas_size: int = 128) -> list[Expert]:
    """One of each shipped SceneSim expert, in :data:`SIM_EXPERT_NAMES` order, drawing on ``canvas_size``."""
    return [make_expert(n, canvas_size=canvas_size) for n in SIM_EXPERT_NAMES]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def model_card_table(names: tuple[str, ...] | None = None, *, version: int = 1) -> str:
    """A markdown table of the model cards of ``names`` (default: the shipped SceneSim experts of card ``version``,
    1 or 2; version 2 adds the strengths and weaknesses columns and the file's sha256).

    Raises:
        ValueError: an unknown ``version``.
    """
    _check_version(version)
    reg = sim_cards(version)
    names = expert_names(version) if names is None else tuple(names)
    cols = [
        ("expert", None), ("analogue", "card.analogue"), ("ops", "ops"), ("cost", "cost"),
        ("max entities", "max_entities"), ("count acc. (<= limit / beyond)", "count"),
        ("colour binding (decay)", "binding"), ("relation acc.", "relation_accuracy"),
        ("attr. leakage", "attribute_leakage"), ("edit acc.", "edit_accuracy"), ("artifacts", "artifacts"),
        ("fidelity", "fidelity"), ("aesthetic", "card.aesthetic"), ("summary", "card.summary"),
    ]
    if version >= 2:
        cols += [("strengths", "card.strengths"), ("weaknesses", "card.weaknesses")]
    rows = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for n in names:
        e = reg.entry(n)
        prof = SimProfile(**{k: v for k, v in e.kwargs.items() if k in SimProfile.__dataclass_fields__})
        cells = []
        for _, key in cols:
            if key is None:
                cells.append(f"`{n}`")
            elif key.startswith("card."):
                cells.append(_fmt(e.card.get(key[5:], "")))
            elif key == "binding":
                cells.append(f"{prof.color_binding:g} ({prof.binding_decay:g})")
            elif key == "count":
                cells.append(f"{prof.count_accuracy:g} (<= {prof.count_limit}) / {prof.count_accuracy_beyond:g}")
            else:
                cells.append(_fmt(getattr(prof, key)))
        rows.append("| " + " | ".join(cells) + " |")
    if version == 1:
        return "\n".join(rows) + f"\n\nCards version {CARD_VERSION} (`experts/sim/cards.toml`)."
    path = CARD_VERSIONS[version]
    return "\n".join(rows) + f"\n\nCards version {version} (`experts/sim/{path.name}`, sha256 {card_hash(path)})."
