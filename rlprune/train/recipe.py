"""Training recipes (``train/*.toml``): PPO hyper-parameters and how the run is organised."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlprune.config import find_config, from_dict, load_toml


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (Stable-Baselines3 names)."""

    learning_rate: float = 3e-4
    n_steps: int = 128  # per environment, per rollout
    batch_size: int = 64
    n_epochs: int = 4
    gamma: float = 1.0  # episodes are a few steps long; the final reward counts in full
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    token_hidden: tuple[int, ...] = (32, 32)  # token-level policies: the per-token scoring MLP

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.n_steps < 1 or self.batch_size < 1 or self.n_epochs < 1:
            raise ValueError("learning_rate, n_steps, batch_size and n_epochs must be positive")
        if not 0 < self.gamma <= 1 or not 0 < self.gae_lambda <= 1:
            raise ValueError("gamma and gae_lambda must lie in (0, 1]")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("hidden must list positive layer widths")


@dataclass(frozen=True)
class RunConfig:
    """Length, parallelism, checkpoints and validation of a training run."""

    timesteps: int = 20_000
    n_envs: int = 2  # sb3: episodes run side by side; ray: env runners
    envs: str = "batched"  # sb3: "batched" (one model, one batched forward) or "processes" (one model each)
    torch_threads: int = 1  # per environment process, so the cores are not oversubscribed
    seed: int = 0
    checkpoint_every: int = 1024  # timesteps between checkpoints (a kill loses at most this much)
    eval_every: int = 2048  # timesteps between validation runs
    eval_tasks: int = 16  # validation prompts per run, each at every eval budget
    eval_budgets: tuple[float, ...] = (0.4, 0.6, 0.8)

    def __post_init__(self) -> None:
        if min(self.timesteps, self.n_envs, self.torch_threads, self.checkpoint_every, self.eval_every) < 1:
            raise ValueError("timesteps, n_envs, torch_threads, checkpoint_every and eval_every must be positive")
        if self.envs not in ("batched", "processes"):
            raise ValueError(f'run.envs must be "batched" or "processes", got {self.envs!r}')
        if self.eval_tasks < 1 or not self.eval_budgets or not all(0 < b <= 1 for b in self.eval_budgets):
            raise ValueError("eval_tasks must be positive and eval_budgets must lie in (0, 1]")


@dataclass(frozen=True)
class WarmStart:
    """Optional behaviour cloning of a baseline before PPO (e.g. ``snapkv``); off when empty.

    For token-level policies the baseline sets the layer head (how many tokens go where) and the
    teacher (:mod:`rlprune.train.teacher`) sets the token head; it always runs for them.
    """

    baseline: str = ""
    episodes: int = 200
    epochs: int = 20
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.epochs < 1 or self.learning_rate <= 0:
            raise ValueError("warm_start episodes, epochs and learning_rate must be positive")


@dataclass(frozen=True)
class RayConfig:
    """Where the ``ray`` backend runs; ``run.n_envs`` is its number of env runners."""

    address: str = ""  # empty: a local Ray sized to this machine; "auto" or HOST:PORT: a running cluster
    sample_timeout_s: float = 600.0  # how long one env runner may take for its share of a rollout

    def __post_init__(self) -> None:
        if self.sample_timeout_s <= 0:
            raise ValueError("sample_timeout_s must be positive")


BACKENDS = ("sb3", "ray")
POLICY_KINDS = ("layer", "token")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: the backend, PPO settings and the run's organisation."""

    backend: str = "sb3"
    policy: str = "layer"  # "layer": op, share and scorer per layer; "token": plus a learned per-token head
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)
    warm_start: WarmStart = field(default_factory=WarmStart)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; available: {', '.join(BACKENDS)}")
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {self.policy!r}; available: {', '.join(POLICY_KINDS)}")

    @classmethod
    def load(cls, name_or_path: str | Path) -> Recipe:
        path = find_config(name_or_path, "train")
        return from_dict(cls, load_toml(path), path.name)
