"""A shared expert service on Ray: experts, critic and (model) decomposer loaded once, batched across envs.

Every env copy normally builds its own experts and critic, so a 4-env run holds four copies of every
model. With ``expert_backend="ray"`` the env instead connects to *host* actors that hold one copy of the
components per replica (one replica per GPU, or fractions of one), and calls them remotely. Envs in any
process that use the same components (same expert names, canvas size, registry, device, critic,
decomposer...) find the same named hosts, so SB3 ``SubprocVecEnv`` workers, RLlib env runners and
processes on other nodes share them. The env sees the usual contracts: :class:`RemoteExpert` is an
:class:`poser_env.core.expert.Expert`, :class:`RemoteCritic` a :class:`poser_env.core.feedback.Critic`.

Inside a host, concurrent calls of the same expert are collected for up to ``max_wait_s`` (or ``max_batch``
requests) and run as one batch with :class:`experts.diffusers.batching.BatchedExpert` (diffusers experts
batch into one pipeline call, each image with its own generator; other experts run one by one). Diffusers
experts' content-addressed output cache lives on the host (``expert_kwargs={"cache_dir": ...}``), so it is
shared by every env. Critic and decomposer calls run one at a time per replica.

Faults: a host that dies is restarted by Ray (``max_restarts``); a call in flight at that moment, a call
that exceeds ``timeout_s`` and any other remote failure raise :class:`poser_env.core.expert.ExpertError` (critic:
:class:`poser_env.core.feedback.CriticError`), which the env reports in ``info["error"]`` (``info["critic_error"]``)
and survives like any failing expert. Errors raised by the component itself (``ValueError``,
``ExpertError``, ``SpecError``...) are re-raised as they are.

Security: :func:`start_local_ray` (what the env calls when no Ray is running and no address is given) starts
Ray with every server on ``127.0.0.1``, the dashboard off and usage statistics off. Point at an existing
cluster with ``RayBackend(address="ray://...")``/``"<host>:6379"``, the ``RAY_ADDRESS`` variable, or by
calling ``ray.init(address=...)`` yourself before the first reset.

Importing this module does not import Ray; Ray loads at the first reset of an env that uses it
(``pip install "image-poser[ray]"``).

Example::

    import gymnasium as gym, poser_env
    from poser_env.remote import RayBackend, start_local_ray

    start_local_ray(num_cpus=4)                       # or ray.init(address=...) for a cluster
    env = gym.make("poser_env/ImagePoser-v0", expert_backend=RayBackend(max_wait_s=0.01))
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle  # a gymnasium dependency
import numpy as np

from critic.factory import make_critic
from experts.diffusers import load_diffusers_experts
from experts.diffusers.batching import BatchedExpert
from experts.registry import make_expert
from poser_env.core.expert import Expert, ExpertError, ExpertOutput
from poser_env.core.feedback import Critic, CriticError, Feedback
from poser_env.core.spec import Spec
from poser_env.decomposer import make_decomposer

if TYPE_CHECKING:
    from poser_env.core.feedback import Detection

__all__ = [
    "ModelHost",
    "RayBackend",
    "RemoteCritic",
    "RemoteDecomposer",
    "RemoteExpert",
    "ServiceLink",
    "connect_components",
    "env_recipe",
    "held_parameter_bytes",
    "recipe_key",
    "start_local_ray",
    "stop_hosts",
]

#: Environment variable that makes Ray use 127.0.0.1 as the node address (every server then binds loopback).
_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class RayBackend:
    """Settings of the shared expert service (``expert_backend=RayBackend(...)``; ``"ray"`` = the defaults).

    Attributes:
        address: Ray cluster to join (``"<host>:6379"``, ``"ray://<host>:10001"``, ``"auto"``); None joins the
            Ray already initialised in this process, else ``RAY_ADDRESS``, else starts a local loopback-only
            Ray (:func:`start_local_ray`).
        namespace: Ray namespace of the named host actors.
        replicas: Host replicas (>= 1); each holds one copy of every component. Envs spread over them.
        num_gpus: GPUs per replica (>= 0; fractions allowed, e.g. 0.5 puts two replicas on one GPU). With
            ``num_gpus=1`` and ``replicas = number of GPUs`` Ray places one replica per GPU.
        num_cpus: CPUs Ray reserves per replica (>= 0; default 0: a host never waits for CPUs that env runners
            hold, and mostly waits on its GPU; set it to keep CPU-heavy hosts apart).
        max_batch: Most requests of one expert run as one batch (>= 1).
        max_wait_s: How long the first request of a batch waits for more, in seconds (>= 0).
        timeout_s: Limit of one remote call in seconds (> 0), or None for no limit; a call over it fails
            with an ExpertError (CriticError) that the env reports in ``info``.
        startup_timeout_s: Limit for the hosts to come up at the first reset, in seconds (> 0).
        max_restarts: How often Ray restarts a dead host (-1: without limit, 0: never).
        max_concurrency: Calls a host serves at once (>= 1; threads of the actor).
        host_critic: Host the critic too (True) or build it in each env (False).
        host_decomposer: Host the decomposer too; None hosts it only when it is a model (``"llm:<path>"``).
        detached: Hosts outlive the process that created them (stop them with ``ray.kill``).
        torch_threads: ``torch.set_num_threads`` inside each host (None: leave torch's default).
        local_num_cpus: CPUs of a local Ray started by the project (None: all of this machine's).
        include_dashboard: Start Ray's dashboard with a local Ray (default False; it listens on 127.0.0.1).
    """

    address: str | None = None
    namespace: str = "image-poser"
    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 0.0
    max_batch: int = 8
    max_wait_s: float = 0.005
    timeout_s: float | None = 300.0
    startup_timeout_s: float = 600.0
    max_restarts: int = -1
    max_concurrency: int = 64
    host_critic: bool = True
    host_decomposer: bool | None = None
    detached: bool = False
    torch_threads: int | None = None
    local_num_cpus: int | None = None
    include_dashboard: bool = False

    def __post_init__(self) -> None:
        def _int(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"RayBackend {name}={v!r} must be an int >= {lo}.")

        def _num(name: str, lo: float, *, open_low: bool = False, none_ok: bool = False) -> None:
            v = getattr(self, name)
            if v is None and none_ok:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or (v <= lo if open_low else v < lo):
                rel = ">" if open_low else ">="
                raise ValueError(f"RayBackend {name}={v!r} must be a number {rel} {lo}" + (" or None." if none_ok else "."))

        _int("replicas", 1)
        _int("max_batch", 1)
        _int("max_restarts", -1)
        _int("max_concurrency", 1)
        _num("num_gpus", 0)
        _num("num_cpus", 0)
        _num("max_wait_s", 0)
        _num("timeout_s", 0, open_low=True, none_ok=True)
        _num("startup_timeout_s", 0, open_low=True)
        if self.torch_threads is not None:
            _int("torch_threads", 1)
        if self.local_num_cpus is not None:
            _int("local_num_cpus", 1)
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"RayBackend address={self.address!r} must be a Ray address such as '10.0.0.5:6379' or None.")
        if not isinstance(self.namespace, str) or not self.namespace.strip():
            raise ValueError(f"RayBackend namespace={self.namespace!r} must be a non-empty string.")
        if self.host_decomposer not in (None, True, False):
            raise ValueError(f"RayBackend host_decomposer={self.host_decomposer!r} must be True, False or None.")

    @classmethod
    def of(cls, value: Any) -> RayBackend:
        """``value`` as a RayBackend: ``"ray"``, a RayBackend, or a mapping of its fields."""
        if isinstance(value, RayBackend):
            return value
        if value == "ray":
            return cls()
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(f"RayBackend fields {sorted(unknown)} are unknown; known: {sorted(cls.__dataclass_fields__)}.")
            return cls(**value)
        raise ValueError(f"expert_backend={value!r} must be 'local', 'ray', a RayBackend or a mapping of its fields.")


# ====================================================================== Ray set-up
def _is_loopback_address(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def start_local_ray(num_cpus: int | None = None, *, include_dashboard: bool = False, namespace: str = "image-poser",
                    **init_kwargs: Any) -> str:
    """Start a local Ray whose servers all listen on 127.0.0.1 (dashboard off, usage statistics off).

    Sets ``RAY_ADDRESS`` in ``os.environ`` so processes started afterwards join this Ray instead of starting
    their own. Processes forked from a server started *before* (multiprocessing's forkserver, which SB3's
    ``SubprocVecEnv`` uses once it has made one) do not see it: pass the returned address to the envs
    (``RayBackend(address=start_local_ray())``). Does nothing but return the address when Ray is already
    initialised in this process.

    Args:
        num_cpus: CPUs Ray may schedule (None: all of this machine's).
        include_dashboard: Start the dashboard (on 127.0.0.1).
        namespace: Ray namespace of this driver.
        **init_kwargs: More ``ray.init`` arguments (``num_gpus``, ``object_store_memory``...).

    Returns:
        The GCS address (``"127.0.0.1:<port>"``).

    Raises:
        RuntimeError: Ray was imported before with cluster addressing on, so its servers would listen on every
            interface (Ray was shut down again); set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before importing
            Ray, or start Ray through this function first.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if "ray" not in sys.modules:
        os.environ[_LOOPBACK_VAR] = "0"
    import ray

    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    kwargs: dict[str, Any] = {"num_cpus": num_cpus, "include_dashboard": include_dashboard, "namespace": namespace,
                              **init_kwargs}
    if include_dashboard:
        kwargs.setdefault("dashboard_host", "127.0.0.1")
    ray.init(**kwargs)
    address = str(ray.get_runtime_context().gcs_address)
    if not _is_loopback_address(address):
        ray.shutdown()
        raise RuntimeError(
            f"Ray started on {address}, not on loopback, because Ray was imported before start_local_ray with "
            f"cluster addressing on; set {_LOOPBACK_VAR}=0 in the environment before importing ray, or call "
            "poser_env.remote.start_local_ray() before anything imports ray."
        )
    os.environ[_LOOPBACK_VAR] = "0"  # inherited by processes started later: their drivers bind loopback too
    os.environ["RAY_ADDRESS"] = address
    return address


def _ensure_ray(backend: RayBackend) -> None:
    """Initialise Ray in this process if needed (join ``backend.address`` / ``RAY_ADDRESS`` or start locally)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return
    address = backend.address or os.environ.get("RAY_ADDRESS")
    if not address:
        start_local_ray(backend.local_num_cpus, include_dashboard=backend.include_dashboard, namespace=backend.namespace)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _is_loopback_address(address) and "ray" not in sys.modules:
        os.environ[_LOOPBACK_VAR] = "0"  # this driver's servers on loopback too, like the cluster's
        # A local Ray (>= 2.52) starts with token authentication on and its token in ~/.ray/auth_token, and tells
        # only the processes started after it (RAY_AUTH_MODE=token). A process forked from a server started
        # earlier (multiprocessing's forkserver) would retry without a token for ever: use the token file too.
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
            os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    ray.init(address=address, namespace=backend.namespace)


# ====================================================================== recipes: what a host builds
def _digest_object(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(cloudpickle.dumps(obj)).hexdigest()


def env_recipe(env: Any, backend: RayBackend) -> dict[str, Any]:
    """What a host must build for ``env`` (an :class:`~poser_env.env.ImagePoserEnv`): a picklable dict.

    Names and settings are kept as they are; Expert, Critic or decomposer *objects* given to the env are
    shipped to the host (they must be picklable with cloudpickle).
    """
    given = list(env._expert_arg or [])
    objects = {i: e for i, e in enumerate(given) if isinstance(e, Expert)}
    recipe: dict[str, Any] = {"names": list(env.expert_names), "objects": objects}
    if hasattr(env, "registry_path"):  # ImagePoserDiffusersEnv
        recipe.update(kind="diffusers", registry=env.registry_path, device=env.device, dtype=env.dtype,
                      local_files_only=env.local_files_only, expert_kwargs=dict(env.expert_kwargs),
                      critic_kwargs={"device": env.device, "dtype": env.dtype or "float32",
                                     "local_files_only": env.local_files_only, **env.critic_kwargs})
    else:
        recipe.update(kind="sim", canvas_size=env.canvas_size, critic_kwargs={})
    recipe["critic"] = env._critic_arg if backend.host_critic else None
    d = env._decomposer_arg
    host_dec = backend.host_decomposer if backend.host_decomposer is not None else (
        isinstance(d, str) and d.startswith("llm:"))
    recipe["decomposer"] = d if host_dec else None
    recipe["max_attempts"] = env.max_attempts
    recipe["torch_threads"] = backend.torch_threads
    return recipe


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """A short stable digest of ``recipe`` (objects by the SHA-256 of their cloudpickle bytes)."""

    def canon(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): canon(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return _digest_object(v)

    text = json.dumps(canon(recipe), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _build(recipe: Mapping[str, Any]) -> tuple[list[Expert], Critic | None, Any]:
    """Build (experts, critic or None, decomposer or None) from a recipe (runs inside the host)."""
    objects: Mapping[int, Expert] = recipe.get("objects", {})
    names: list[str] = list(recipe["names"])
    experts: list[Expert]
    if recipe["kind"] == "diffusers":

        todo = [n for i, n in enumerate(names) if i not in objects]
        built = iter(load_diffusers_experts(recipe["registry"], todo, device=recipe["device"], dtype=recipe["dtype"],
                                            local_files_only=recipe["local_files_only"], **recipe["expert_kwargs"]))
        experts = [objects[i] if i in objects else next(built) for i in range(len(names))]
    else:

        experts = [objects[i] if i in objects else make_expert(n, canvas_size=recipe["canvas_size"])
                   for i, n in enumerate(names)]
    critic: Critic | None = None
    c = recipe.get("critic")
    if isinstance(c, Critic):
        critic = c
    elif isinstance(c, str):

        critic = make_critic(c, **recipe.get("critic_kwargs", {}))
    if critic is not None and callable(getattr(critic, "load", None)):
        critic.load()  # type: ignore[attr-defined]
    decomposer = recipe.get("decomposer")
    if isinstance(decomposer, str):

        decomposer = make_decomposer(decomposer, max_attempts=recipe["max_attempts"])
    return experts, critic, decomposer


# ====================================================================== memory accounting
def held_parameter_bytes() -> int:
    """Bytes of torch parameters and buffers held by the modules alive in *this* process (0 without torch).

    Counts each storage once (shared weights count once), on every device.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    seen: set[tuple[str, int]] = set()
    total = 0
    for obj in gc.get_objects():
        if not issubclass(type(obj), torch.nn.Module):  # type(): no __getattr__ of lazy module proxies
            continue
        for t in itertools.chain(obj.parameters(recurse=False), obj.buffers(recurse=False)):
            try:
                key = (str(t.device), t.untyped_storage().data_ptr())
                nbytes = t.untyped_storage().nbytes()
            except (RuntimeError, NotImplementedError):  # meta tensors, tensor subclasses without storage
                continue
            if key not in seen:
                seen.add(key)
                total += int(nbytes)
    return total


# ====================================================================== the host actor
class ModelHost:
    """Holds one copy of the components of a recipe and serves calls (wrapped by ``ray.remote`` at start).

    Args:
        recipe: From :func:`env_recipe`.
        max_batch, max_wait_s: Micro-batching of each expert (see :class:`RayBackend`).
    """

    def __init__(self, recipe: Mapping[str, Any], max_batch: int = 8, max_wait_s: float = 0.005) -> None:

        threads = recipe.get("torch_threads")
        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))
        self.experts, self.critic, self.decomposer = _build(recipe)
        self._by_name = {e.name: e for e in self.experts}
        self._batched = {e.name: BatchedExpert(e, max_batch=max_batch, max_wait_s=max_wait_s)
                         for e in self.experts if callable(getattr(e, "generate_many", None))}
        self._locks = {e.name: threading.Lock() for e in self.experts if e.name not in self._batched}
        self._critic_lock = threading.Lock()
        self._decomposer_lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.started = time.time()

    def describe(self) -> dict[str, Any]:
        """Names, kinds, ops and costs of the experts, the critic's name, whether a decomposer is hosted."""
        return {
            "experts": [{"name": e.name, "kind": e.kind, "ops": sorted(e.ops), "cost": float(e.cost)}
                        for e in self.experts],
            "critic": None if self.critic is None else self.critic.name,
            "decomposer": self.decomposer is not None,
            "pid": os.getpid(),
        }

    def run_expert(self, name: str, command: str, image: np.ndarray | None, seed: int, state: Any,
                   detections: Sequence[Detection], params: Mapping[str, Any]) -> ExpertOutput:
        """One expert call (batched with concurrent calls of the same expert when it can batch)."""
        self.calls[name] = self.calls.get(name, 0) + 1
        batched = self._batched.get(name)
        if batched is not None:
            return batched(command, image, seed=seed, state=state, detections=detections, **params)
        expert = self._by_name.get(name)
        if expert is None:
            raise ValueError(f"expert name={name!r} is not hosted here; hosted: {sorted(self._by_name)}.")
        with self._locks[name]:
            return expert(command, image, seed=seed, state=state, detections=detections, **params)

    def judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        """The hosted critic's feedback on ``image``."""
        if self.critic is None:
            raise CriticError("no critic is hosted here (host_critic=False).")
        self.calls["critic"] = self.calls.get("critic", 0) + 1
        with self._critic_lock:
            return self.critic(image, spec)

    def decompose(self, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """``decomposer.<method>(*args, **kwargs)`` for method in parse / plan / revise."""
        if self.decomposer is None or method not in ("parse", "plan", "revise"):
            raise ValueError(f"method={method!r}: the host has no decomposer or the method is not parse/plan/revise.")
        with self._decomposer_lock:
            return getattr(self.decomposer, method)(*args, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Process id, calls per component, batch sizes per expert and the bytes of model weights held."""
        return {
            "pid": os.getpid(),
            "calls": dict(self.calls),
            "batch_sizes": {n: list(b.batch_sizes) for n, b in self._batched.items()},
            "parameter_bytes": held_parameter_bytes(),
            "uptime_s": time.time() - self.started,
        }


# ====================================================================== the client side
_NEXT_LINK = itertools.count()
#: Handles of the hosts this process created or joined, by actor name: Ray destroys a (non-detached) actor when
#: no handle to it is left, so the hosts live as long as this process (or until :func:`stop_hosts`).
_HOSTS: dict[tuple[str, str, str], Any] = {}
_HOSTS_LOCK = threading.Lock()


@dataclass
class ServiceLink:
    """A picklable link to the replicas of one host: names, namespace and call settings.

    A copy unpickled in another process (SB3 ``SubprocVecEnv`` worker, RLlib env runner) joins Ray and looks
    the actors up by name on first use.
    """

    names: tuple[str, ...]
    backend: RayBackend
    replica: int = 0
    _handle: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names, "backend": self.backend, "replica": self.replica, "_handle": None}

    def handle(self) -> Any:
        if self._handle is None:
            _ensure_ray(self.backend)
            import ray

            self._handle = ray.get_actor(self.names[self.replica % len(self.names)], namespace=self.backend.namespace)
        return self._handle

    def call(self, method: str, *args: Any, error: type[Exception] = ExpertError, what: str = "") -> Any:
        """Call ``method`` on the replica; Ray failures and timeouts raise ``error`` naming ``what``."""
        import ray
        from ray import exceptions as rex

        try:
            ref = getattr(self.handle(), method).remote(*args)
        except (rex.RayError, ValueError) as exc:  # ValueError: no actor of that name (its owner process ended)
            raise error(f"remote {what}: the Ray host could not be reached ({type(exc).__name__}: {exc})") from exc
        try:
            return ray.get(ref, timeout=self.backend.timeout_s)
        except rex.GetTimeoutError as exc:
            with contextlib.suppress(Exception):  # best effort: a running call of a threaded actor runs on
                ray.cancel(ref)
            raise error(
                f"remote {what} timed out after {self.backend.timeout_s:g} s (RayBackend timeout_s); the host keeps "
                "running"
            ) from exc
        except rex.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None  # the component's own error (ValueError, ExpertError, SpecError...)
            raise error(f"remote {what} failed: {exc}") from exc
        except rex.RayError as exc:  # actor died (Ray restarts it), unavailable, object lost...
            raise error(
                f"remote {what} failed: {type(exc).__name__}: the Ray host died or is restarting "
                f"(max_restarts={self.backend.max_restarts}); {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc


class RemoteExpert(Expert):
    """An :class:`~poser_env.core.expert.Expert` whose calls run in a shared Ray host (arguments checked here first)."""

    def __init__(self, link: ServiceLink, name: str, kind: Any, ops: Sequence[str], cost: float) -> None:
        self.link = link
        self.name = name
        self.kind = kind
        self.ops = frozenset(ops)
        self.cost = float(cost)

    def _generate(
        self, command: str, image: np.ndarray | None, *, seed: int, state: Any,
        detections: Sequence[Detection], **params: Any,
    ) -> ExpertOutput:
        out: ExpertOutput = self.link.call("run_expert", self.name, command, image, seed, state, tuple(detections),
                                           params, what=f"expert {self.name!r}")
        img = out.image if out.image.flags.writeable else np.array(out.image)
        return ExpertOutput(img, out.seed, out.elapsed, {**dict(out.metadata), "remote": True}, out.state)


class RemoteCritic(Critic):
    """A :class:`~poser_env.core.feedback.Critic` whose calls run in a shared Ray host."""

    def __init__(self, link: ServiceLink, name: str) -> None:
        self.link = link
        self.name = name

    def _judge(self, image: np.ndarray, spec: Spec) -> Feedback:
        fb: Feedback = self.link.call("judge", image, spec, error=CriticError, what=f"critic {self.name!r}")
        return fb


class RemoteDecomposer:
    """A decomposer (parse / plan / revise) whose calls run in a shared Ray host."""

    def __init__(self, link: ServiceLink) -> None:
        self.link = link

    def parse(self, prompt: str) -> Any:
        return self.link.call("decompose", "parse", (prompt,), {}, error=RuntimeError, what="decomposer parse")

    def plan(self, spec: Any) -> Any:
        return self.link.call("decompose", "plan", (spec,), {}, error=RuntimeError, what="decomposer plan")

    def revise(self, plan: Any, feedback: Any, *, executed: bool = True) -> Any:
        return self.link.call("decompose", "revise", (plan, feedback), {"executed": executed}, error=RuntimeError,
                              what="decomposer revise")


def connect_components(env: Any, backend: RayBackend) -> tuple[list[Expert], Critic | None, Any]:
    """Get or create the hosts for ``env``'s components; returns (remote experts, critic, decomposer).

    The critic (decomposer) is None when it is not hosted (the env then builds its own).

    Raises:
        RuntimeError: the hosts did not come up within ``startup_timeout_s`` or failed to build (the cause
            is attached and named).
    """
    _ensure_ray(backend)
    import ray
    from ray import exceptions as rex

    recipe = env_recipe(env, backend)
    # hosts with other batching or placement settings are other hosts (timeout_s is the caller's business)
    host_settings = {f: getattr(backend, f) for f in ("max_batch", "max_wait_s", "max_concurrency", "num_gpus",
                                                       "num_cpus", "max_restarts", "detached")}
    key = recipe_key({**recipe, "host": host_settings})
    actor_cls = ray.remote(ModelHost)
    names = tuple(f"poser-host-{key}-{i}" for i in range(backend.replicas))
    session = str(ray.get_runtime_context().gcs_address)
    handles: list[Any] = []
    for n in names:
        with _HOSTS_LOCK:
            known = _HOSTS.get((session, backend.namespace, n))
        if known is not None:
            handles.append(known)
            continue
        opts: dict[str, Any] = {
            "name": n, "namespace": backend.namespace, "get_if_exists": True, "max_restarts": backend.max_restarts,
            "max_task_retries": 0, "max_concurrency": backend.max_concurrency, "num_cpus": backend.num_cpus,
            "num_gpus": backend.num_gpus,
        }
        if backend.detached:
            opts["lifetime"] = "detached"
        handle = actor_cls.options(**opts).remote(recipe, backend.max_batch, backend.max_wait_s)  # type: ignore[attr-defined]
        with _HOSTS_LOCK:
            handle = _HOSTS.setdefault((session, backend.namespace, n), handle)
        handles.append(handle)
    try:
        desc = ray.get([h.describe.remote() for h in handles], timeout=backend.startup_timeout_s)[0]
    except rex.GetTimeoutError as exc:
        raise RuntimeError(
            f"the Ray expert hosts {list(names)} did not start within {backend.startup_timeout_s:g} s "
            "(RayBackend startup_timeout_s); check the cluster has the CPUs/GPUs asked for "
            f"(num_cpus={backend.num_cpus}, num_gpus={backend.num_gpus} per replica)."
        ) from exc
    except rex.RayError as exc:
        raise RuntimeError(f"the Ray expert host could not build the env's components: {exc}") from exc
    link = ServiceLink(names, backend, replica=(os.getpid() + next(_NEXT_LINK)) % len(names), _handle=None)
    link._handle = handles[link.replica]
    experts: list[Expert] = [RemoteExpert(link, d["name"], d["kind"], d["ops"], d["cost"]) for d in desc["experts"]]
    critic = RemoteCritic(link, desc["critic"]) if desc["critic"] is not None else None
    decomposer = RemoteDecomposer(link) if desc["decomposer"] else None
    return experts, critic, decomposer


def stop_hosts() -> list[str]:
    """Kill the hosts this process created or joined (``ray.kill``, no restart); returns their names.

    Envs still using them report every later call as failed; build new envs afterwards.
    """
    with _HOSTS_LOCK:
        items = list(_HOSTS.items())
        _HOSTS.clear()
    if not items:
        return []
    import ray

    for _, h in items:
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)
    return [n for (_, _, n), _ in items]

