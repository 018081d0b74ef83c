"""Checkpoints of a run: ``last/`` (policy and trainer state) and ``best/`` (the best validated policy).

A checkpoint holds tensors in safetensors and everything else in JSON; nothing is pickled. The
trainer's state is whatever nested dicts, lists, arrays and plain values a backend gives
(an optimizer's ``state_dict``, RLlib's learner state): :func:`split_tree` stores it losslessly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlprune.policies import ReductionPolicy, load_policy, save_policy
from rlprune.train.common.folder import FINGERPRINT, HISTORY, STATE, TRAINER_TENSORS, replace_folder


def split_tree(tree: Any, tensors: dict[str, torch.Tensor] | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """A JSON skeleton of ``tree`` (dicts keep their key types) and its arrays as named tensors."""
    tensors = {} if tensors is None else tensors
    if isinstance(tree, dict):
        return {"dict": [[key, split_tree(value, tensors)[0]] for key, value in tree.items()]}, tensors
    if isinstance(tree, (list, tuple)):
        return {"list": [split_tree(value, tensors)[0] for value in tree]}, tensors
    if isinstance(tree, (np.ndarray, torch.Tensor, np.generic)):
        name = str(len(tensors))
        tensors[name] = torch.as_tensor(np.asarray(tree) if not isinstance(tree, torch.Tensor) else tree)
        tensors[name] = tensors[name].detach().clone().contiguous()
        return {"tensor": name, "numpy": not isinstance(tree, torch.Tensor)}, tensors
    return {"value": tree}, tensors


def join_tree(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild what :func:`split_tree` took apart."""
    if "dict" in skeleton:
        return {key if not isinstance(key, list) else tuple(key): join_tree(v, tensors) for key, v in skeleton["dict"]}
    if "list" in skeleton:
        return [join_tree(value, tensors) for value in skeleton["list"]]
    if "tensor" in skeleton:
        tensor = tensors[skeleton["tensor"]]
        return tensor.numpy() if skeleton["numpy"] else tensor
    return skeleton["value"]


def save_checkpoint(
    folder: Path,
    policy: ReductionPolicy,
    trainer_state: Any,
    counters: dict[str, Any],
    run: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
) -> None:
    """Policy, the trainer's own state (optimizer, ...), step counters and the validation history so
    far (so a resumed run's summary holds all of it); replaces ``folder`` atomically."""

    def write(staging: Path) -> None:
        save_policy(policy, staging, reward_preset=run.get("env"), training=counters, fingerprint=run.get(FINGERPRINT))
        skeleton, tensors = split_tree(trainer_state)
        save_file(tensors, str(staging / TRAINER_TENSORS))
        state = {**counters, HISTORY: list(history or []), "trainer": skeleton}
        (staging / STATE).write_text(json.dumps(state, indent=1))

    replace_folder(folder, write)


def load_checkpoint(folder: Path) -> tuple[ReductionPolicy, Any, dict[str, Any]]:
    """``(policy, trainer_state, counters)`` from a folder written by :func:`save_checkpoint`
    (the counters include the validation history)."""
    state = json.loads((folder / STATE).read_text())
    trainer = join_tree(state.pop("trainer"), load_file(str(folder / TRAINER_TENSORS)))
    return load_policy(folder), trainer, state


class BestKeeper:
    """Keeps ``best/``: the policy with the highest validation reward seen in this run folder."""

    def __init__(self, run_dir: Path, run: dict[str, Any]) -> None:
        self.folder, self.run = run_dir / "best", run
        config = self.folder / "config.json"
        self.best = (
            json.loads(config.read_text())["training"].get("validation_reward", -np.inf)
            if config.is_file()
            else -np.inf
        )

    def offer(self, policy: ReductionPolicy, result: dict[str, Any], counters: dict[str, Any]) -> None:
        """Keep ``policy`` if its validation ``result`` beats the best so far."""
        if result["reward"] > self.best:
            self.best = result["reward"]
            training = {**counters, "validation_reward": result["reward"], "validation": result}
            replace_folder(
                self.folder,
                lambda d: save_policy(
                    policy,
                    d,
                    reward_preset=self.run.get("env"),
                    training=training,
                    fingerprint=self.run.get(FINGERPRINT),
                ),
            )
