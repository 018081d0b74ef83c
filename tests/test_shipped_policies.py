"""The shipped policies give the same decisions and answers as the release that recorded them.

`tests/data/shipped_policy_outputs.json` holds, for the first 10 grounded-qa test questions at
budget 0.5, each shipped policy's actions, tokens per layer and 12 greedy answer tokens, recorded
with the engine before it was split into modules (`smollm2-135m-span`'s again when the head began
keeping and dropping whole sentences and when it gained a later head at layer 8: changes of the
policy, not of the engine). Any change to
the engine, the ops, the scorers or the checkpoint loader that moves one decision or one answer token fails here.
"""

import json
from pathlib import Path

import pytest

from rlprune.engine import Reducer
from rlprune.eval.suites import load_suite
from rlprune.policies import load_policy
from rlprune.prompts import build_prompt

RECORDED = json.loads((Path(__file__).parent / "data" / "shipped_policy_outputs.json").read_text())


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_shipped_policy_decides_and_answers_as_recorded(smollm2, name):
    model, tokenizer = smollm2
    policy = load_policy(name, model)  # by its shipped name
    reducer = Reducer(model)
    tasks = load_suite("grounded-qa", limit=len(RECORDED[name]))[1]
    for task, recorded in zip(tasks, RECORDED[name], strict=True):
        assert task.question == recorded["question"]
        prompt = build_prompt(tokenizer, task.question, task.context)
        result = reducer.generate(
            prompt.input_ids,
            policy=policy,
            budget=0.5,
            protect_last=prompt.protect_last,
            max_new_tokens=12,
        )
        actions = {str(layer): str(action) for layer, action in result.prefill.state.actions.items()}
        assert actions == recorded["actions"]
        assert result.prefill.tokens_per_layer == recorded["tokens_per_layer"]
        assert result.tokens[0].tolist() == recorded["answer"]
