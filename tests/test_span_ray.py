"""A span head's PPO stage on Ray workers with the tiny model: the same batches, rewards and head as
the stage played in one process, and a recipe on ``--backend ray`` exports a head that acts."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_tokenizer
from test_span_head import _span_recipe

ray = pytest.importorskip("ray")

from rlprune import Reducer, load_model, load_policy  # noqa: E402
from rlprune.config import find_config  # noqa: E402
from rlprune.policies import SpanHeadPolicy  # noqa: E402
from rlprune.train.backends.ray_span import shares  # noqa: E402
from rlprune.train.kinds.span_ppo import PlayRequest, tune_span_head  # noqa: E402
from rlprune.train.recipe import Recipe, RunConfig, SpanPPOConfig  # noqa: E402
from rlprune.train.trainer import TrainOptions, train  # noqa: E402


def _preset(folder, model_dir) -> str:
    """The smoke preset on the tiny model saved in ``model_dir`` (what each worker loads)."""
    path = folder / "smoke-tiny.toml"
    text = find_config("smoke", "envs").read_text()
    path.write_text(text.replace('model = "tiny-random"', f'model = "{model_dir}"'))
    return str(path)


def _stage(backend: str, preset: str, model_dir, out) -> tuple[SpanHeadPolicy, dict]:
    """Two PPO updates of a fresh layer-1 head, 4 prompts x 2 samples each, on ``backend``."""
    model, tokenizer = load_model(model_dir)
    torch.manual_seed(0)
    head = SpanHeadPolicy(model.config.hidden_size, decision_layer=1, rank=8, channels=4, kernel=5)
    ppo = SpanPPOConfig(
        env=preset, updates=2, prompts=4, group=2, validation_tasks=1, validation_budgets=(0.6,), learning_rate=1e-2
    )
    recipe = Recipe(policy="span", backend=backend, run=RunConfig(n_envs=2), span_ppo=ppo)
    return head, tune_span_head(head, model, tokenizer, recipe, show_progress=False, out=out)


def test_shares_keep_the_request_order():
    requests = [PlayRequest(i, 0.5, i) for i in range(5)]
    assert shares(requests, 2) == [requests[:3], requests[3:]]
    assert shares(requests[:1], 2) == [requests[:1]]  # no empty share


def test_a_ray_stage_plays_and_learns_what_the_local_stage_does(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    preset = _preset(tmp_path, tiny_model_dir)
    local_head, local = _stage("sb3", preset, tiny_model_dir, tmp_path / "local")
    ray_head, remote = _stage("ray", preset, tiny_model_dir, tmp_path / "ray")
    assert not ray.is_initialized()  # the backend started Ray, so it stopped it
    assert remote["backend"] == "ray" and remote["ray_workers"] == 2 and remote["timesteps"] == local["timesteps"] == 16
    rewards = [[u["reward"] for u in s["ppo_updates"]] for s in (local, remote)]
    assert len(rewards[0]) == 2 and rewards[1] == pytest.approx(rewards[0], abs=1e-5)
    ours, theirs = local_head.state_dict(), ray_head.state_dict()
    assert all(torch.allclose(ours[key], theirs[key], atol=1e-5, rtol=0) for key in ours)
    torch.manual_seed(0)
    start = SpanHeadPolicy(ray_head.hidden_size, decision_layer=1, rank=8, channels=4, kernel=5)
    assert any(not torch.equal(v, start.state_dict()[k]) for k, v in ray_head.state_dict().items())  # it learned


def test_a_span_recipe_on_ray_exports_a_head_that_acts(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("RLPRUNE_HOME", str(tmp_path / "home"))
    recipe = _span_recipe(tmp_path, tiny_model_dir)  # the tiny span recipe, on ray, with one PPO update
    text = open(recipe).read().replace('policy = "span"\n', 'policy = "span"\nbackend = "ray"\n')
    ppo = f'[span_ppo]\nenv = "{_preset(tmp_path, tiny_model_dir)}"\nupdates = 1\nprompts = 2\ngroup = 2\n'
    open(recipe, "w").write(text + ppo + "validation_tasks = 1\nvalidation_budgets = [0.6]\n")
    summary = train(TrainOptions(recipe=recipe, out=tmp_path / "run", workers=2, quiet=True))
    assert summary["ppo"]["backend"] == "ray" and summary["ppo"]["ray_workers"] == 2 and summary["timesteps"] == 4
    model, _ = load_model(tiny_model_dir)
    head = load_policy(tmp_path / "run" / "policy", model)
    assert isinstance(head, SpanHeadPolicy) and head.decision_layer == 1
    ids = tiny_tokenizer()("the keeper of the boat rang six bells in the town on the river . " * 6).input_ids
    ids = torch.tensor([ids])
    out = Reducer(model).run(ids, policy=head, budget=0.6, protect_last=4)
    assert out.tokens_per_layer[-1] < ids.shape[1] and out.flops_ratio == pytest.approx(0.6, abs=0.05)
