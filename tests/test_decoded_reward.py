"""Episodes that decode: the reduced model's own greedy answer, judged as evaluation judges it (tiny model)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rlprune.config import ConfigError
from rlprune.data.tasks import Task
from rlprune.envs import EnvConfig, TokenReductionEnv, make_vector_env
from rlprune.envs.rewards import Decoded, RewardConfig, final_reward
from rlprune.reduction import LayerAction

DECODE = 6


def decoding(**weights: float) -> EnvConfig:
    """The smoke preset with episodes that decode ``DECODE`` tokens, rewarded by the decoded answer."""
    smoke = EnvConfig.load("smoke")
    reward = replace(smoke.reward, **dict.fromkeys(RewardConfig.TEACHER_FORCED, 0.0), **weights)
    return replace(smoke, episode=replace(smoke.episode, decode_tokens=DECODE), reward=reward)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


def finish(env: TokenReductionEnv, actions: list[LayerAction], **options) -> tuple[float, dict]:
    env.reset(seed=0, options=options)
    total = 0.0
    for action in actions:
        _, reward, done, _, info = env.step(action)
        total += reward
        if done:
            return total, info
    raise AssertionError("the episode did not end")


def test_an_unreduced_episode_decodes_the_full_models_greedy_answer_and_its_log_probabilities(cache_dir):
    env = TokenReductionEnv(decoding(solved=1.0, confidence=1.0, kl_cap=50.0), cache_dir=cache_dir)  # no floor
    model, tokenizer = env.reducer.model, env.tokenizer
    for index in range(3):
        _, info = finish(env, [LayerAction()] * 3, task_index=index, budget=1.0)
        reference = env.reference
        prompt = reference.input_ids[:, : reference.prompt_length]
        generated = model.generate(prompt, max_new_tokens=DECODE, do_sample=False)[0, prompt.shape[1] :]
        assert info["answer"] == tokenizer.decode(generated, skip_special_tokens=True)
        with torch.no_grad():  # the full model, teacher-forced on its own answer
            logits = model(torch.cat((prompt[0], generated))[None]).logits[0, prompt.shape[1] - 1 : -1]
        chosen = logits.log_softmax(-1).gather(1, generated[:, None])[:, 0]
        assert info["confidence"] == pytest.approx(float(chosen.mean()), abs=1e-4) and info["confidence"] > -50
        assert np.isnan(info["kl"]) and info["solved"] in (0.0, 1.0)
        assert info["flops_ratio"] == pytest.approx(1.0, abs=1e-6)  # decoding is not prefill


def test_a_decoded_answer_is_paid_for_being_right_and_sure_and_docked_for_echoing():
    config = RewardConfig(**dict.fromkeys(RewardConfig.TEACHER_FORCED, 0.0), solved=2.0, confidence=0.5, echo=1.5)
    question = "What is the code of the blue door?"
    task = Task("grounded", question, context="The blue door's code is 4018.", answer="4018")

    def paid(text: str, logprobs: list[float]) -> float:
        decoded = Decoded.judge(text, torch.tensor(logprobs), task)
        return final_reward(None, 0.5, 0.5, config, question=question, decoded=decoded)

    right, wrong = paid("It is 4018.", [-0.5, -0.5]), paid("It is 4081.", [-0.5, -0.5])
    assert right - wrong == pytest.approx(2.0)
    assert paid("It is 4018.", [-0.1, -0.1]) - right == pytest.approx(0.5 * 0.4)
    assert paid("It is 4018.", [-50.0, -0.0]) == pytest.approx(2.0 - 0.5 * 2.5)  # each token floored at -5
    assert wrong - paid(question, [-0.5] * 2) == pytest.approx(1.5)  # saying the question back
    assert Decoded.judge("It is 4018.", torch.zeros(1), Task("instruction", "Say hi.")).solved is None


def test_a_preset_that_decodes_refuses_teacher_forced_weights_and_the_other_way_round():
    smoke = EnvConfig.load("smoke")
    with pytest.raises(ConfigError, match="teacher-force nothing: set kl, agreement, answer, hallucination to 0"):
        replace(smoke, episode=replace(smoke.episode, decode_tokens=4))
    with pytest.raises(ConfigError, match="solved judge the reduced model's decoded answer: set decode_tokens"):
        replace(smoke, reward=replace(smoke.reward, solved=1.0))
    with pytest.raises(ValueError, match="decode_tokens must be 0"):
        replace(smoke.episode, decode_tokens=-1)


def test_the_vector_env_decodes_each_row_as_a_single_env_does(tmp_path):
    config = decoding(solved=1.0, confidence=1.0, loop=0.5)
    vector = make_vector_env(config, num_envs=3, cache_dir=tmp_path)
    model, tokenizer = vector.reducer.model, vector.envs[0].tokenizer
    singles = [TokenReductionEnv(config, cache_dir=tmp_path, model=model, tokenizer=tokenizer) for _ in range(3)]
    vector.reset(seed=5)
    for i, env in enumerate(singles):
        env.reset(seed=5 + i)
    rng = np.random.default_rng(0)
    totals, single_totals = np.zeros(3), np.zeros(3)
    for _ in range(3):
        actions = np.stack([vector.single_action_space.sample() for _ in range(3)])
        actions[:, 0] = rng.integers(1, 3, size=3)  # prune or merge, so rows keep different tokens
        _, rewards, terminated, _, infos = vector.step(actions)
        totals += rewards
        steps = [env.step(actions[i]) for i, env in enumerate(singles)]
        single_totals += [step[1] for step in steps]
    assert terminated.all()
    assert np.allclose(totals, single_totals, atol=1e-4)
    assert list(infos["final_info"]["answer"]) == [step[4]["answer"] for step in steps]


def test_a_reduced_episode_decodes_what_generation_under_the_same_cut_says(cache_dir):
    """The episode's prompt-only prefill (from layer 0) and its decoding are those of ``Reducer.generate``."""
    env = TokenReductionEnv(decoding(solved=1.0), cache_dir=cache_dir)
    actions = [LayerAction("prune", 0.5, "relevance"), LayerAction(), LayerAction("merge", 1.0, "similarity")]
    for index in range(3):
        _, info = finish(env, actions, task_index=index, budget=0.4)
        reference = env.reference
        schedule = dict(zip(env.config.episode.decision_layers, actions, strict=True))
        result = env.reducer.generate(
            reference.input_ids[:, : reference.prompt_length], schedule, max_new_tokens=DECODE,
            protect_last=reference.protect_last,
        )  # fmt: skip
        assert info["answer"] == env.tokenizer.decode(result.tokens[0], skip_special_tokens=True)
        assert info["flops_ratio"] == pytest.approx(result.prefill.flops_ratio) and info["flops_ratio"] < 0.9


def test_finishing_refuses_a_negative_number_of_tokens(cache_dir):
    from rlprune.envs.env import finish_episodes
    from rlprune.errors import RLPruneError

    env = TokenReductionEnv(decoding(solved=1.0), cache_dir=cache_dir)
    env.reset(seed=0)
    with pytest.raises(RLPruneError, match="decode_tokens must be an integer"):
        finish_episodes(env.reducer, env._state, -1)
