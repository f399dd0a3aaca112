"""Warm-starting an agent from a teacher's demonstrations (behaviour cloning before RL).

Long prompts need 15-20 correct calls in a row before the success term of the reward pays. From a random start
PPO finds a local optimum long before that: regenerate once, then STOP. The standard remedy is to *kickstart*
the policy: roll out a teacher (a scripted baseline, e.g. the fixed pipeline), fit the actor to the teacher's
actions (cross-entropy over the legal actions only) and the critic to the discounted returns the teacher
earned, then let PPO improve on it with the env's own reward. The teacher is only a starting point: PPO is free
to move away from it (it does: see the README's results, where the learned policy's usage differs).

Works for PPO and MaskablePPO (any SB3 ``ActorCriticPolicy``); DQN is not supported (its Q-head would need
returns for every action, which one teacher cannot provide).

Example::

    demos = collect_demonstrations("fixed:sim/layout", env_id="poser_env/ImagePoser-v0", episodes=300)
    model = make_model("maskable-ppo", venv)
    stats = pretrain(model, demos)          # {'accuracy': 0.97, 'policy_loss': ..., 'value_loss': ...}
    model.learn(20_000)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import poser_env  # noqa: F401  (registers the env ids)
from agents.policies import Policy, make_baseline
from poser_env.env import unwrap

__all__ = ["Demonstrations", "ImitationError", "collect_demonstrations", "make_teacher", "pretrain"]


class ImitationError(ValueError):
    """A bad argument for collecting demonstrations or pretraining (the message names it and the fix)."""


@dataclass(frozen=True)
class Demonstrations:
    """Teacher transitions, one row per env step.

    Attributes:
        obs: Observation key -> array with a leading axis of length N (the env's observation dtype).
        actions: Shape (N,), int64: the teacher's actions.
        masks: Shape (N, n_actions), bool: the legal actions at that step (``env.action_masks()``).
        returns: Shape (N,), float32: discounted return-to-go from that step (the critic's target).
        episode_returns: Shape (E,): undiscounted return of each episode.
        successes: Shape (E,), bool: the episode's ``info["is_success"]``.
        teacher: The teacher's name.
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    masks: np.ndarray
    returns: np.ndarray
    episode_returns: np.ndarray
    successes: np.ndarray
    teacher: str

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def make_teacher(name: str, *, seed: int = 0, **kwargs: Any) -> Policy:
    """A teacher from a baseline name: ``"fixed:<text-to-image expert>"`` (e.g. ``"fixed:sim/layout"``), or any
    name :func:`agents.policies.make_baseline` takes (``"random"``, ``"single:<expert>"``, ``"critic-greedy"``);
    ``kwargs`` go to it (e.g. ``per_op=`` for a fixed pipeline).

    Raises:
        ImitationError: an empty or unknown name.
    """
    if not isinstance(name, str) or not name.strip():
        raise ImitationError(f"teacher={name!r} must be a baseline name such as 'fixed:sim/layout'.")
    if name == "fixed":
        raise ImitationError("teacher='fixed' needs its text-to-image expert: pass e.g. teacher='fixed:sim/layout'.")
    if name == "oracle":
        raise ImitationError("teacher='oracle' searches with the judge and is too slow to imitate; use 'fixed:<expert>'.")
    try:
        return make_baseline(name, seed=seed, **kwargs)
    except ValueError as exc:
        raise ImitationError(f"teacher={name!r}: {exc}") from exc


def collect_demonstrations(
    teacher: str | Policy,
    *,
    env_id: str = "poser_env/ImagePoser-v0",
    env_kwargs: Mapping[str, Any] | None = None,
    episodes: int = 300,
    seed: int = 0,
    gamma: float = 0.99,
) -> Demonstrations:
    """Roll out ``teacher`` for ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) on prompts the env draws
    from its own (training) pool.

    Args:
        teacher: A :class:`~agents.policies.Policy` or a name for :func:`make_teacher`.
        env_id / env_kwargs: The env the student trains in (same observation and reward).
        episodes: Number of episodes (>= 1). SceneSim runs about 200 steps a second, so 300 long-and-short
            episodes take 20-40 s on one core (measured 22-39 s in the main job).
        seed: First episode seed (>= 0).
        gamma: Discount for the return-to-go targets, in [0, 1] (use the student's).

    Raises:
        ImitationError: a bad argument.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ImitationError(f"episodes={episodes!r} must be an int >= 1, e.g. episodes=300.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ImitationError(f"seed={seed!r} must be an int >= 0.")
    if not isinstance(gamma, (int, float)) or not 0.0 <= float(gamma) <= 1.0:
        raise ImitationError(f"gamma={gamma!r} must be a number in [0, 1], e.g. the student's gamma=0.99.")
    policy = make_teacher(teacher, seed=seed) if isinstance(teacher, str) else teacher
    env = gym.make(env_id, **dict(env_kwargs or {}))
    obs_rows: list[dict[str, np.ndarray]] = []
    actions: list[int] = []
    masks: list[np.ndarray] = []
    returns: list[float] = []
    ep_returns: list[float] = []
    successes: list[bool] = []
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            policy.reset(env)
            rewards: list[float] = []
            done = False
            info: dict[str, Any] = {}
            while not done:
                mask = np.asarray(unwrap(env).action_masks(), dtype=np.bool_)
                a = int(policy.act(env, obs))
                obs_rows.append({key: np.array(v, copy=True) for key, v in obs.items()})
                actions.append(a)
                masks.append(mask)
                obs, r, terminated, truncated, info = env.step(a)
                rewards.append(float(r))
                done = bool(terminated or truncated)
            g, togo = 0.0, []
            for r in reversed(rewards):
                g = r + float(gamma) * g
                togo.append(g)
            returns += togo[::-1]
            ep_returns.append(float(sum(rewards)))
            successes.append(bool(info.get("is_success", False)))
    finally:
        env.close()
    keys = list(obs_rows[0])
    return Demonstrations(
        obs={key: np.stack([o[key] for o in obs_rows]) for key in keys},
        actions=np.asarray(actions, dtype=np.int64),
        masks=np.stack(masks),
        returns=np.asarray(returns, dtype=np.float32),
        episode_returns=np.asarray(ep_returns, dtype=np.float64),
        successes=np.asarray(successes, dtype=np.bool_),
        teacher=getattr(policy, "name", type(policy).__name__),
    )


def pretrain(
    model: Any,
    demos: Demonstrations,
    *,
    epochs: int = 8,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    value_weight: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``model``'s actor to the teacher's actions and its critic to the teacher's returns, in place.

    The actor's loss is the cross-entropy of the teacher's action under the model's (masked, when the policy
    takes masks) distribution; the critic's is the mean squared error to the return-to-go. Uses its own Adam
    optimiser, so the model's PPO optimiser state is untouched.

    Args:
        model: An SB3 ``PPO`` or sb3-contrib ``MaskablePPO`` whose observation space matches the demonstrations.
        demos: From :func:`collect_demonstrations`.
        epochs: Passes over the demonstrations (>= 1).
        batch_size: Minibatch rows (>= 1).
        learning_rate: Adam step size (> 0).
        value_weight: Weight of the critic's loss (>= 0).
        seed: Shuffling seed.

    Returns:
        ``accuracy`` (the model's greedy action equals the teacher's, on the demonstrations, after training),
        ``policy_loss`` and ``value_loss`` of the last epoch, and ``rows``.

    Raises:
        ImitationError: a bad argument, an unsupported model (DQN), or demonstrations whose keys or shapes do not
            match the model's observation space.
    """
    import torch

    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ImitationError(f"{name}={v!r} must be an int >= {lo}.")
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ImitationError(f"learning_rate={learning_rate!r} must be a number > 0, e.g. 1e-3.")
    if not isinstance(value_weight, (int, float)) or value_weight < 0:
        raise ImitationError(f"value_weight={value_weight!r} must be a number >= 0, e.g. 0.5.")
    policy = getattr(model, "policy", None)
    if policy is None or not hasattr(policy, "evaluate_actions"):
        raise ImitationError(
            f"model={type(model).__name__} has no actor-critic policy; warm starts work for 'ppo' and 'maskable-ppo', "
            "not DQN."
        )
    space = model.observation_space
    if not isinstance(space, spaces.Dict) or set(space.spaces) != set(demos.obs):
        raise ImitationError(
            f"the demonstrations have observation keys {sorted(demos.obs)} but the model expects "
            f"{sorted(getattr(space, 'spaces', {}) or ['<not a Dict>'])}; collect them in the env the model trains in."
        )
    obs_np: dict[str, np.ndarray] = {}
    for key, sub in space.spaces.items():
        arr = demos.obs[key]
        want = tuple(sub.shape or ())
        if arr.shape[1:] != want and arr.ndim == 4 and len(want) == 3 and arr.shape[1:] == (*want[1:], want[0]):
            arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # SB3's VecTransposeImage: HWC -> CHW
        if arr.shape[1:] != want:
            raise ImitationError(
                f"demonstrations obs[{key!r}] rows have shape {demos.obs[key].shape[1:]}, the model expects "
                f"{sub.shape}; collect them with the same env_kwargs as training."
            )
        obs_np[key] = arr
    n_actions = int(model.action_space.n)
    if demos.masks.shape[1] != n_actions:
        raise ImitationError(
            f"the demonstrations have {demos.masks.shape[1]} actions, the model {n_actions}; use the same experts."
        )
    masked = "action_masks" in policy.evaluate_actions.__code__.co_varnames
    device = policy.device
    policy.set_training_mode(True)
    opt = torch.optim.Adam(policy.parameters(), lr=float(learning_rate))
    rng = np.random.default_rng(seed)
    n = len(demos)
    def obs_t(idx: np.ndarray) -> Any:
        return policy.obs_to_tensor({k: v[idx] for k, v in obs_np.items()})[0]

    act_t = torch.as_tensor(demos.actions, device=device)
    ret_t = torch.as_tensor(demos.returns, device=device)
    mask_np = demos.masks

    def evaluate(idx: np.ndarray) -> tuple[Any, Any, Any]:
        ob = obs_t(idx)
        if masked:
            return policy.evaluate_actions(ob, act_t[idx], action_masks=mask_np[idx])  # type: ignore[no-any-return]
        return policy.evaluate_actions(ob, act_t[idx])  # type: ignore[no-any-return]

    p_loss = v_loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(n)
        p_sum = v_sum = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            values, log_prob, _ = evaluate(idx)
            lp = -log_prob.mean()
            lv = torch.nn.functional.mse_loss(values.flatten(), ret_t[idx])
            loss = lp + float(value_weight) * lv
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
            p_sum += float(lp.detach()) * len(idx)
            v_sum += float(lv.detach()) * len(idx)
        p_loss, v_loss = p_sum / n, v_sum / n
    policy.set_training_mode(False)
    with torch.no_grad():
        agree = 0
        for start in range(0, n, 1024):
            idx = np.arange(start, min(n, start + 1024))
            ob = obs_t(idx)
            dist = policy.get_distribution(ob, action_masks=mask_np[idx]) if masked else policy.get_distribution(ob)
            greedy = dist.get_actions(deterministic=True)
            agree += int((greedy == act_t[idx]).sum())
    return {"accuracy": agree / n, "policy_loss": p_loss, "value_loss": v_loss, "rows": float(n)}
