"""A safe file format for trained policies and checkpoints: safetensors weights plus a JSON config.

Stable-Baselines3's ``model.zip`` stores parts of the model with cloudpickle (the ``data`` entry's
``":serialized:"`` values), and ``PPO.load`` unpickles them: loading a zip runs whatever code its author put
there. The format here never unpickles anything. A policy is two files side by side::

    policy.json          what to rebuild: algorithm, policy class (an SB3 alias), its constructor arguments,
                         observation and action spaces, the env id, package version and kwargs, the text encoder,
                         the experts behind the actions, and the sha256 of the weights file
    policy.safetensors   the policy's tensors (safetensors holds raw tensors only, no code)

Loading (:func:`load_policy`) rebuilds the SB3 policy from the JSON (classes are looked up in fixed allow-lists,
never imported by name from the file), checks the weights' sha256 and loads them with ``strict=True``. With an
env given it also checks that the env is the one the policy was trained for (:func:`check_compatible`): env id,
observation and action spaces, text encoder and expert order; a mismatch is a :class:`PolicyMismatchError` naming
what differs and the fix.

Checkpoints (:func:`save_checkpoint`) are the same pair of files with the optimizer state, the timestep count and
the training run's settings added, so training resumes from them (:func:`restore_checkpoint`). Every file is
written atomically (:mod:`agents.atomic`); the JSON is written last and names the weights' sha256, so a
checkpoint interrupted half-way is detected and skipped by :func:`newest_checkpoint`.

SB3 zips still load with ``trust_pickle=True`` (CLI: ``--trust-pickle``), for files you made yourself.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

import poser_env
from agents.algos import ALGO_CLASSES
from agents.atomic import atomic_write, atomic_write_json
from agents.errors import PolicyFileError, PolicyMismatchError, UnsafePolicyError
from agents.extractor import PoserExtractor
from poser_env.env import ImagePoserEnv

__all__ = [
    "CHECKPOINT_RE",
    "FORMAT",
    "FORMAT_VERSION",
    "PolicyFileError",
    "PolicyMismatchError",
    "UnsafePolicyError",
    "check_compatible",
    "describe_space",
    "env_signature",
    "is_policy_path",
    "list_checkpoints",
    "load_policy",
    "newest_checkpoint",
    "read_config",
    "restore_checkpoint",
    "save_checkpoint",
    "save_policy",
    "space_from_description",
]

FORMAT = "image-poser-policy"
FORMAT_VERSION = 1
#: ``<prefix>_<timesteps>_steps.json`` (a safe checkpoint's config; its weights are the ``.safetensors`` beside).
CHECKPOINT_RE = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.json$")

_ALGO_KEYS = ("ppo", "maskable_ppo", "dqn")




# ---------------------------------------------------------------------------------------------- spaces
def _bound(a: np.ndarray) -> Any:
    flat = np.asarray(a).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        v = flat[0].item()
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    return [x if math.isfinite(x) else ("inf" if x > 0 else "-inf") for x in flat.tolist()]


def _unbound(v: Any, shape: tuple[int, ...]) -> np.ndarray:
    # float() reads the numbers and the strings "inf" / "-inf" that _bound writes for infinite bounds
    if isinstance(v, list):
        return np.asarray([float(x) for x in v], dtype=np.float64).reshape(shape)
    return np.full(shape, float(v), dtype=np.float64)


def describe_space(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON description of a ``Box``, ``Discrete``, ``MultiBinary``, ``MultiDiscrete`` or ``Dict`` space."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: describe_space(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype), "low": _bound(space.low),
                "high": _bound(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    raise PolicyFileError(f"space {space!r} cannot be described in the safe policy format (Box, Discrete, "
                          "MultiBinary, MultiDiscrete and Dict only).")


def space_from_description(d: Mapping[str, Any]) -> gym.Space[Any]:
    """The space :func:`describe_space` described (only the space types it writes; anything else is an error)."""
    if not isinstance(d, Mapping) or "type" not in d:
        raise PolicyFileError(f"space description {d!r} must be an object with a 'type'.")
    t = d["type"]
    try:
        if t == "Dict":
            return spaces.Dict({str(k): space_from_description(v) for k, v in d["spaces"].items()})
        if t == "Box":
            shape = tuple(int(x) for x in d["shape"])
            dtype = np.dtype(str(d["dtype"]))
            if dtype.kind not in "fiub":
                raise PolicyFileError(f"Box dtype {d['dtype']!r} is not a number type.")
            return spaces.Box(_unbound(d["low"], shape).astype(dtype), _unbound(d["high"], shape).astype(dtype),
                              shape=shape, dtype=dtype)  # type: ignore[arg-type]
        if t == "Discrete":
            return spaces.Discrete(int(d["n"]), start=int(d.get("start", 0)))
        if t == "MultiBinary":
            return spaces.MultiBinary(d["n"])
        if t == "MultiDiscrete":
            return spaces.MultiDiscrete([int(x) for x in d["nvec"]])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PolicyFileError):
            raise
        raise PolicyFileError(f"space description {dict(d)!r} is malformed: {exc}") from exc
    raise PolicyFileError(f"space type {t!r} is not one of Box, Discrete, MultiBinary, MultiDiscrete, Dict.")


# ---------------------------------------------------------------------------------------------- classes
def _algo_class(algo: str) -> type[BaseAlgorithm]:

    if algo not in ALGO_CLASSES:
        raise PolicyFileError(f"algo={algo!r} in the policy file is not one of {sorted(ALGO_CLASSES)}.")
    return ALGO_CLASSES[algo]


def _class_tables() -> dict[str, dict[str, Any]]:
    from stable_baselines3.common import torch_layers


    act = {c.__name__: c for c in (torch.nn.Tanh, torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.GELU,
                                   torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Identity)}
    opt = {c.__name__: c for c in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop)}
    ext = {c.__name__: c for c in (PoserExtractor, torch_layers.FlattenExtractor, torch_layers.CombinedExtractor,
                                   torch_layers.NatureCNN)}
    return {"activation_fn": act, "optimizer_class": opt, "features_extractor_class": ext}


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON (tuples become lists); anything else (objects, functions) is an error naming ``where``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    raise PolicyFileError(f"{where}={value!r} cannot be written to the safe policy format (JSON values and the "
                          "classes of agents.policy_io._class_tables only).")


def _policy_params(policy: BasePolicy) -> dict[str, Any]:
    tables = _class_tables()
    params = dict(policy._get_constructor_parameters())
    for key in ("observation_space", "action_space", "lr_schedule"):
        params.pop(key, None)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in tables:
            names = {c: n for n, c in tables[key].items()}
            if value not in names:
                raise PolicyFileError(f"policy {key}={value!r} is not one the safe format can rebuild; known: "
                                      f"{sorted(tables[key])}.")
            out[key] = {"class": names[value]}
        else:
            out[key] = _jsonable(value, f"policy_kwargs[{key!r}]")
    return out


def _policy_kwargs_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    tables = _class_tables()
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in tables:
            name = value.get("class") if isinstance(value, Mapping) else None
            if name not in tables[key]:
                raise PolicyFileError(f"policy {key}={value!r} in the policy file is not one of {sorted(tables[key])}.")
            out[key] = tables[key][name]
        else:
            out[key] = value
    if isinstance(out.get("optimizer_kwargs"), Mapping) and "betas" in out["optimizer_kwargs"]:
        out["optimizer_kwargs"] = {**out["optimizer_kwargs"], "betas": tuple(out["optimizer_kwargs"]["betas"])}
    return out


def _alias_of(model: BaseAlgorithm) -> str:
    for alias, cls in model.policy_aliases.items():
        if type(model.policy) is cls:
            return alias
    raise PolicyFileError(f"policy class {type(model.policy).__name__} is not one of {type(model).__name__}'s "
                          f"aliases {sorted(model.policy_aliases)}; the safe format rebuilds aliases only.")


def _algo_key(model: BaseAlgorithm) -> str:

    for key, cls in ALGO_CLASSES.items():
        if type(model) is cls:
            return key
    raise PolicyFileError(f"model of class {type(model).__name__} is not one of {sorted(ALGO_CLASSES)}.")


# ---------------------------------------------------------------------------------------------- env identity
def _env_attr(env: gym.Env[Any, Any] | VecEnv, name: str) -> Any:
    if isinstance(env, VecEnv):
        return env.get_attr(name, indices=[0])[0]
    return getattr(env.unwrapped, name, None)


def env_signature(env: gym.Env[Any, Any] | VecEnv) -> dict[str, Any]:
    """What a policy depends on in an env: spaces, text encoder name and the experts behind the actions."""
    encoder = _env_attr(env, "encoder")
    names = _env_attr(env, "expert_names")
    if names is None:  # the expert list of a poser env is built at its first reset
        if isinstance(env, VecEnv):
            env.env_method("prepare", indices=[0])
        elif isinstance(env.unwrapped, ImagePoserEnv):
            env.unwrapped.prepare()
        names = _env_attr(env, "expert_names")
    return {
        "observation_space": describe_space(env.observation_space),
        "action_space": describe_space(env.action_space),
        "text_encoder": getattr(encoder, "name", None),
        "expert_names": list(names) if names is not None else None,
    }


def _env_version() -> str:

    return str(getattr(poser_env, "__version__", "unknown"))


def _space_diff(a: Mapping[str, Any], b: Mapping[str, Any], where: str = "") -> list[str]:
    if a.get("type") != b.get("type"):
        return [f"{where or 'space'}: {a.get('type')} vs {b.get('type')}"]
    if a["type"] == "Dict":
        diffs = []
        ka, kb = set(a["spaces"]), set(b["spaces"])
        if ka - kb:
            diffs.append(f"keys only in the policy: {sorted(ka - kb)}")
        if kb - ka:
            diffs.append(f"keys only in the env: {sorted(kb - ka)}")
        for k in sorted(ka & kb):
            diffs += _space_diff(a["spaces"][k], b["spaces"][k], f"{where}[{k!r}]" if where else repr(k))
        return diffs
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return [f"{where or 'space'} {k}: {a.get(k)!r} (policy) vs {b.get(k)!r} (env)" for k in keys]


def check_compatible(config: Mapping[str, Any], env: gym.Env[Any, Any] | VecEnv, *, env_id: str | None = None,
                     source: str = "policy") -> None:
    """Raise :class:`PolicyMismatchError` unless ``env`` is the kind of env the policy in ``config`` was trained on.

    Checked: the env id (when ``env_id`` is given), the action space and the experts behind the actions (their
    order), the observation space (keys, shapes, bounds, dtypes) and the text encoder (hashing and MiniLM vectors
    have the same shape but mean different things). Each message names the file, what differs and the fix.
    """
    trained_id = config.get("env_id")
    if env_id is not None and trained_id is not None and env_id != trained_id:
        raise PolicyMismatchError(f"{source} was trained on env {trained_id!r}, not {env_id!r}: its observations and "
                                  f"actions mean other things there. Evaluate it with --env {trained_id}.")
    sig = env_signature(env)
    want_enc, have_enc = config.get("text_encoder"), sig["text_encoder"]
    if want_enc is not None and have_enc is not None and want_enc != have_enc:
        raise PolicyMismatchError(f"{source} was trained with text_encoder={want_enc!r} but this env encodes text with "
                                  f"{have_enc!r} (same vector size, different meaning). Pass --env-arg "
                                  f"text_encoder={want_enc}.")
    diffs = _space_diff(config["action_space"], sig["action_space"])
    want_x, have_x = config.get("expert_names"), sig["expert_names"]
    if want_x is not None and have_x is not None and list(want_x) != list(have_x):
        raise PolicyMismatchError(f"{source} was trained with experts {list(want_x)} (+ STOP) but this env has "
                                  f"{list(have_x)}: action i would run another expert. Use the registry and env "
                                  "arguments it was trained with (see its JSON config).")
    if diffs:
        raise PolicyMismatchError(f"the action space of {source} differs from this env's: {'; '.join(diffs)}. Use the "
                                  "env it was trained on (see its JSON config).")
    diffs = _space_diff(config["observation_space"], sig["observation_space"])
    if diffs:
        kw = config.get("env_kwargs") or {}
        hint = ", ".join(f"{k}={v}" for k, v in kw.items() if k in ("feedback_in_obs", "thumbnail", "thumbnail_size"))
        raise PolicyMismatchError(f"the observation space of {source} differs from this env's: {'; '.join(diffs[:4])}. "
                                  f"Use the env arguments it was trained with{f' ({hint})' if hint else ''}.")


# ---------------------------------------------------------------------------------------------- saving
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pair(path: str | Path) -> tuple[Path, Path]:
    """(config .json, weights .safetensors) for a path given as either file, the stem, or a folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "policy.json"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(path, lambda fh: fh.write(data))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            key = f"optimizer/{idx}/{name}"
            if isinstance(v, torch.Tensor):
                tensors[key] = v
            else:
                scalars[key] = _jsonable(v, key)
    groups = [_jsonable(g, "optimizer.param_groups") for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _config(model: BaseAlgorithm, env: gym.Env[Any, Any] | VecEnv | None, env_id: str,
            env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    env = env if env is not None else model.get_env()
    if env is None:
        raise PolicyFileError("save_policy needs the env the model was trained on (env=...) to record its spaces, "
                              "text encoder and experts; the model has none attached.")
    sig = env_signature(env)
    model_sig = {"observation_space": describe_space(model.observation_space),
                 "action_space": describe_space(model.action_space)}
    for k, v in model_sig.items():
        if v != sig[k]:
            raise PolicyFileError(f"the model's {k} differs from the env's given to save_policy; pass the env it was "
                                  "trained on.")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "algo": _algo_key(model),
        "policy": _alias_of(model),
        "policy_params": _policy_params(model.policy),
        "env_id": env_id,
        "env_version": _env_version(),
        "env_kwargs": _jsonable(dict(env_kwargs or {}), "env_kwargs"),
        **sig,
        "observation_layout": _layout(sig["observation_space"]),
        "num_timesteps": int(model.num_timesteps),
    }


def _layout(desc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Observation keys in the order the policy's extractor reads them (SB3 sorts Dict keys), with shapes."""
    if desc["type"] != "Dict":
        return [{"key": None, "shape": desc.get("shape"), "dtype": desc.get("dtype")}]
    return [{"key": k, "shape": s.get("shape"), "dtype": s.get("dtype")} for k, s in desc["spaces"].items()]


def save_policy(model: BaseAlgorithm, path: str | Path, *, env_id: str, env_kwargs: Mapping[str, Any] | None = None,
                env: gym.Env[Any, Any] | VecEnv | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``model``'s policy as ``<stem>.safetensors`` + ``<stem>.json`` (see the module docstring).

    Args:
        model: A PPO, MaskablePPO or DQN model (see :mod:`agents.algos`).
        path: ``.../policy.json``, ``.../policy.safetensors``, the stem ``.../policy`` or a folder (then
            ``<folder>/policy.*``).
        env_id: The Gymnasium id of the env it was trained on (recorded and checked at load).
        env_kwargs: The env's keyword arguments (recorded; JSON values only).
        env: The env (default: the model's own) whose spaces, text encoder and experts are recorded.
        extra: More JSON fields for the config (e.g. the training seed).

    Returns:
        The config's path (``.json``): pass it (or the folder) to :func:`load_policy` and ``--policy``.
    """
    cfg_path, w_path = _pair(path)
    config = _config(model, env, env_id, env_kwargs)
    if extra:
        config.update(_jsonable(dict(extra), "extra"))
    _save_tensors(w_path, dict(model.policy.state_dict()), {"format": FORMAT})
    config["weights"] = w_path.name
    config["weights_sha256"] = _sha256(w_path)
    atomic_write_json(cfg_path, config)
    return cfg_path


# ---------------------------------------------------------------------------------------------- loading
def is_policy_path(name: str) -> bool:
    """Whether ``name`` (a ``--policy`` value) names a model file rather than a baseline."""
    p = Path(name)
    return p.suffix in (".zip", ".json", ".safetensors") or p.is_dir()


def _refuse_zip(p: Path) -> UnsafePolicyError:
    return UnsafePolicyError(
        f"policy {str(p)!r} is a Stable-Baselines3 zip: loading it unpickles its 'data' entry with cloudpickle, "
        "which runs any code the file's author put there. Load it only if you trust it (--trust-pickle, or "
        "trust_pickle=True), or use the safe policy.json + policy.safetensors that `poser train` writes.")


def read_config(path: str | Path) -> tuple[dict[str, Any], Path, Path]:
    """Read and validate a policy or checkpoint config; returns ``(config, config path, weights path)``.

    Raises:
        UnsafePolicyError: ``path`` is an SB3 ``.zip`` (see :func:`load_policy`).
        PolicyFileError: the files are missing, not JSON, of another format, or the weights' sha256 differs from
            the one recorded (a file replaced or a write interrupted).
    """
    p = Path(path)
    if p.suffix == ".zip":
        raise _refuse_zip(p)
    if p.is_dir() and not (p / "policy.json").is_file():
        raise PolicyFileError(f"policy folder {str(p)!r} has no policy.json; pass the policy.json `poser train` wrote "
                              "(in the run folder) or a checkpoint's .json.")
    cfg_path, w_path = _pair(p)
    if not cfg_path.is_file():
        raise PolicyFileError(f"policy {str(path)!r}: no config {cfg_path.name} there (looked for {cfg_path}); pass a "
                              "policy.json written by `poser train`.")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyFileError(f"policy config {str(cfg_path)!r} is not valid JSON ({exc}); the file is damaged or not "
                              "a policy config.") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PolicyFileError(f"policy config {str(cfg_path)!r} is not an {FORMAT} file (its 'format' is "
                              f"{config.get('format') if isinstance(config, dict) else None!r}).")
    if config.get("format_version") != FORMAT_VERSION:
        raise PolicyFileError(f"policy config {str(cfg_path)!r} has format_version {config.get('format_version')!r}; "
                              f"this version of image-poser reads {FORMAT_VERSION}.")
    missing = [k for k in ("algo", "policy", "policy_params", "observation_space", "action_space", "weights",
                           "weights_sha256") if k not in config]
    if missing:
        raise PolicyFileError(f"policy config {str(cfg_path)!r} lacks {missing}.")
    w_path = cfg_path.with_name(Path(str(config["weights"])).name)  # never outside the config's folder
    if not w_path.is_file():
        raise PolicyFileError(f"policy config {str(cfg_path)!r} names weights {w_path.name!r}, which are missing.")
    if _sha256(w_path) != config["weights_sha256"]:
        raise PolicyFileError(f"weights {str(w_path)!r} do not match the sha256 recorded in {cfg_path.name} (replaced "
                              "or written only half-way); use another checkpoint or retrain.")
    return config, cfg_path, w_path


def _read_tensors(w_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyFileError(f"weights {str(w_path)!r} cannot be read as safetensors: {exc}") from exc


def _first_error(exc: BaseException) -> str:
    """The informative part of a torch ``load_state_dict`` error (its first detail line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)


def _build_policy(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], device: str,
                  source: str) -> BasePolicy:
    cls = _algo_class(str(config["algo"]))
    aliases = cls.policy_aliases
    if config["policy"] not in aliases:
        raise PolicyFileError(f"{source}: policy {config['policy']!r} is not one of {cls.__name__}'s {sorted(aliases)}.")
    policy_cls = aliases[config["policy"]]
    kwargs = _policy_kwargs_from_params(config["policy_params"])
    try:
        policy = policy_cls(space_from_description(config["observation_space"]),
                            space_from_description(config["action_space"]), lambda _: 0.0, **kwargs)
    except TypeError as exc:
        raise PolicyFileError(f"{source}: cannot rebuild {policy_cls.__name__} from its policy_params: {exc}") from exc
    state = {k: v for k, v in tensors.items() if not k.startswith("optimizer/")}
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PolicyFileError(f"{source}: its weights do not fit the policy its config describes: "
                              f"{_first_error(exc)[:300]}") from exc
    return policy.to(device)


def load_policy(path: str | Path, *, env: gym.Env[Any, Any] | VecEnv | None = None, env_id: str | None = None,
                device: str = "cpu") -> BasePolicy:
    """Load a policy saved by :func:`save_policy` (or a checkpoint's policy) without unpickling anything.

    Args:
        path: The ``.json`` config, its ``.safetensors``, the stem, or a run folder holding ``policy.json``.
        env: When given, checked with :func:`check_compatible` (spaces, text encoder, experts).
        env_id: When given, must equal the env id the policy was trained on.
        device: Torch device of the returned policy.

    Returns:
        The SB3 policy module (``predict(obs, deterministic=True)``, ``action_masks=`` for MaskablePPO's).

    Raises:
        UnsafePolicyError: ``path`` is an SB3 ``.zip`` (use :func:`agents.algos.load_model` with
            ``trust_pickle=True`` for zips you trust).
        PolicyFileError / PolicyMismatchError: see :func:`read_config` and :func:`check_compatible`.
    """
    config, cfg_path, w_path = read_config(path)
    if env is not None:
        check_compatible(config, env, env_id=env_id, source=f"policy {str(cfg_path)!r}")
    elif env_id is not None and config.get("env_id") not in (None, env_id):
        raise PolicyMismatchError(f"policy {str(cfg_path)!r} was trained on env {config.get('env_id')!r}, not "
                                  f"{env_id!r}. Evaluate it with --env {config.get('env_id')}.")
    policy = _build_policy(config, _read_tensors(w_path), device, f"policy {str(cfg_path)!r}")
    policy.set_training_mode(False)
    setattr(policy, "poser_config", config)  # noqa: B010  (the config it was loaded from, for callers)
    return policy


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(model: BaseAlgorithm, folder: str | Path, *, env_id: str, env_kwargs: Mapping[str, Any] | None,
                    run: Mapping[str, Any] | None = None, name_prefix: str = "model") -> Path:
    """Save a resumable checkpoint ``<folder>/<prefix>_<timesteps>_steps.{safetensors,json}``.

    Holds the policy's weights, the optimizer state, the timestep count and ``run`` (JSON: seed, algorithm
    overrides...). The weights are written (atomically) first, the JSON last, so a checkpoint whose JSON exists
    is complete. Returns the JSON's path.
    """
    d = Path(folder)
    stem = d / f"{name_prefix}_{int(model.num_timesteps)}_steps"
    cfg_path, w_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")
    config = _config(model, None, env_id, env_kwargs)
    opt_tensors, opt_meta = _optimizer_tensors(model.policy.optimizer)
    tensors = {**dict(model.policy.state_dict()), **opt_tensors}
    _save_tensors(w_path, tensors, {"format": FORMAT})
    config.update({"checkpoint": True, "optimizer": opt_meta, "run": _jsonable(dict(run or {}), "run"),
                   "weights": w_path.name, "weights_sha256": _sha256(w_path)})
    for attr in ("_n_updates", "_episode_num", "_n_calls"):
        if hasattr(model, attr):
            config.setdefault("counters", {})[attr] = int(getattr(model, attr))
    atomic_write_json(cfg_path, config)
    return cfg_path


def list_checkpoints(folder: str | Path, name_prefix: str = "model") -> list[tuple[int, Path]]:
    """``(timesteps, config path)`` of the safe checkpoints in ``folder``, newest first (not yet verified)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = []
    for f in d.iterdir():
        m = CHECKPOINT_RE.match(f.name)
        if m and m.group("prefix") == name_prefix:
            found.append((int(m.group("steps")), f))
    return sorted(found, reverse=True)


def newest_checkpoint(folder: str | Path, name_prefix: str = "model") -> Path | None:
    """The newest checkpoint in ``folder`` that is complete and intact (config readable, weights' sha256 and
    tensors valid), or None. Damaged ones (a write interrupted by a kill) are skipped."""
    for _, cfg in list_checkpoints(folder, name_prefix):
        try:
            config, _, w_path = read_config(cfg)
            _build_policy(config, _read_tensors(w_path), "cpu", str(cfg))
        except PolicyFileError:
            continue
        return cfg
    return None


def restore_checkpoint(model: BaseAlgorithm, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights, optimizer state and timestep count into ``model`` (built with
    :func:`agents.algos.make_model` for the same algorithm, env and overrides). Returns the checkpoint's config.

    Raises:
        PolicyFileError: not a checkpoint, damaged, or of another algorithm / policy shape.
    """
    config, cfg_path, w_path = read_config(path)
    if not config.get("checkpoint"):
        raise PolicyFileError(f"{str(cfg_path)!r} is a policy without optimizer state, not a checkpoint; resume from "
                              "a file in the run's checkpoints/ folder (or the run folder itself).")
    if config["algo"] != _algo_key(model):
        raise PolicyFileError(f"checkpoint {str(cfg_path)!r} was trained with algo {config['algo']!r}, not "
                              f"{_algo_key(model)!r}; pass --algo {config['algo'].replace('_', '-')}.")
    check_compatible(config, model.get_env() or model.env, source=f"checkpoint {str(cfg_path)!r}")  # type: ignore[arg-type]
    tensors = _read_tensors(w_path)
    state = {k: v for k, v in tensors.items() if not k.startswith("optimizer/")}
    try:
        model.policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PolicyFileError(f"checkpoint {str(cfg_path)!r} does not fit this model (other net_arch or "
                              f"extractor?): {_first_error(exc)[:300]}") from exc
    opt_meta = config.get("optimizer") or {}
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer/"):
            _, idx, name = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    for key, v in (opt_meta.get("scalars") or {}).items():
        _, idx, name = key.split("/", 2)
        opt_state.setdefault(int(idx), {})[name] = v
    groups = opt_meta.get("param_groups")
    if groups:
        try:
            model.policy.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        except (ValueError, KeyError) as exc:
            raise PolicyFileError(f"checkpoint {str(cfg_path)!r}: optimizer state does not fit: {exc}") from exc
    model.num_timesteps = int(config["num_timesteps"])
    for attr, v in (config.get("counters") or {}).items():
        if attr in ("_n_updates", "_episode_num", "_n_calls"):
            setattr(model, attr, int(v))
    return config
