"""``apply`` across blocks and threads: blocks nest and exit in any order, a block reduces only the
calls of the thread that entered it, and when every block has exited the model is the untouched one."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from conftest import tiny_model

import rlprune

IDS = torch.randint(3, 64, (1, 120), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def untouched(model):
    """The model's own forward and its logits and greedy tokens before any block."""
    return model.forward, model(IDS).logits, model.generate(IDS, max_new_tokens=4, do_sample=False)


def assert_untouched(model, untouched) -> None:
    forward, logits, _ = untouched
    assert "forward" not in model.__dict__ and model.forward == forward
    assert torch.equal(model(IDS).logits, logits)


def reduced_positions(model) -> int:
    return model(IDS).logits.shape[1]


def test_blocks_that_exit_out_of_order_leave_the_model_untouched(model, untouched):
    first, second = rlprune.apply(model, "snapkv", budget=0.3), rlprune.apply(model, "fastv", budget=0.5)
    first.__enter__()
    assert reduced_positions(model) < IDS.shape[1]  # snapkv: logits for the kept tokens only
    second.__enter__()
    first.__exit__(None, None, None)
    assert reduced_positions(model) < IDS.shape[1]  # the second block still holds
    second.__exit__(None, None, None)
    assert_untouched(model, untouched)


def test_nested_blocks_run_the_innermost_and_give_back_the_outer(model, untouched):
    with rlprune.apply(model, "snapkv", budget=0.3):
        outer = model(IDS).logits
        with rlprune.apply(model, "none"):
            assert torch.equal(model(IDS).logits, untouched[1])  # the inner block: nothing removed
        assert torch.equal(model(IDS).logits, outer)  # the outer block again
    assert_untouched(model, untouched)


def test_an_exception_inside_nested_blocks_leaves_the_model_untouched(model, untouched):
    with pytest.raises(RuntimeError, match="boom"), rlprune.apply(model, "snapkv", budget=0.3):
        with rlprune.apply(model, "fastv", budget=0.5):
            model.generate(IDS, max_new_tokens=2, do_sample=False)
            raise RuntimeError("boom")
    assert_untouched(model, untouched)


def test_a_block_exited_from_another_thread_stops_reducing_where_it_was_entered(model, untouched):
    with rlprune.apply(model, "none"):
        outer = model(IDS).logits
        inner = rlprune.apply(model, "snapkv", budget=0.3)
        inner.__enter__()
        assert reduced_positions(model) < outer.shape[1]
        thread = threading.Thread(target=inner.__exit__, args=(None, None, None))
        thread.start()
        thread.join(60)
        assert torch.equal(model(IDS).logits, outer)  # the outer block again, not the exited one
    assert_untouched(model, untouched)


def test_a_forward_set_on_the_instance_is_given_back(model, untouched):
    own = model.forward  # as accelerate's hooks do: a forward of the instance's own
    model.forward = lambda *args, **kwargs: own(*args, **kwargs)
    mine = model.forward
    try:
        with rlprune.apply(model, "snapkv", budget=0.3):
            assert reduced_positions(model) < IDS.shape[1]
        assert model.__dict__["forward"] is mine
    finally:
        del model.forward
    assert_untouched(model, untouched)


def test_threads_each_in_their_own_block_and_plain_calls_beside_them(model, untouched):
    """Two threads generate 20 times each inside their own block; a third calls the model plainly
    meanwhile and always gets the full model's logits and tokens."""
    _, logits, tokens = untouched
    alone = {}
    for spec, budget in (("snapkv", 0.3), ("fastv", 0.5)):
        with rlprune.apply(model, spec, budget=budget):
            alone[spec] = (model(IDS).logits, model.generate(IDS, max_new_tokens=4, do_sample=False))
    results: dict[str, list] = {"snapkv": [], "fastv": [], "plain": []}
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def reduced(spec: str, budget: float) -> None:
        start.wait()
        with rlprune.apply(model, spec, budget=budget):
            for _ in range(20):
                results[spec].append((model(IDS).logits, model.generate(IDS, max_new_tokens=4, do_sample=False)))

    def plain() -> None:
        start.wait()
        while len(results["plain"]) < 20 or any(len(results[s]) < 20 for s in ("snapkv", "fastv")):
            results["plain"].append((model(IDS).logits, model.generate(IDS, max_new_tokens=4, do_sample=False)))
            if len(results["plain"]) > 200:
                break

    def guarded(target, *args):
        try:
            target(*args)
        except BaseException as error:  # noqa: BLE001 (reported below, in the test's thread)
            errors.append(error)

    threads = [
        threading.Thread(target=guarded, args=(reduced, "snapkv", 0.3)),
        threading.Thread(target=guarded, args=(reduced, "fastv", 0.5)),
        threading.Thread(target=guarded, args=(plain,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    for spec in ("snapkv", "fastv"):
        assert len(results[spec]) == 20 and alone[spec][0].shape[1] < IDS.shape[1]  # reduced: fewer positions
        assert all(torch.equal(x, alone[spec][0]) and torch.equal(y, alone[spec][1]) for x, y in results[spec])
    assert len(results["plain"]) >= 20
    assert all(torch.equal(x, logits) and torch.equal(y, tokens) for x, y in results["plain"])
    assert_untouched(model, untouched)


def test_a_block_in_one_thread_leaves_the_model_whole_for_another(model, untouched):
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:
        with rlprune.apply(model, "snapkv", budget=0.3):
            entered.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(60)
    try:
        assert torch.equal(model(IDS).logits, untouched[1])  # this thread entered no block
    finally:
        done.set()
        holder.join(60)
    assert_untouched(model, untouched)


def test_an_asyncio_task_started_outside_a_block_runs_the_full_model(model, untouched):
    async def main() -> tuple[torch.Tensor, torch.Tensor]:
        async def plain() -> torch.Tensor:
            await asyncio.sleep(0)
            return model(IDS).logits  # runs while the block below is open

        task = asyncio.create_task(plain())  # its context was copied before the block
        with rlprune.apply(model, "snapkv", budget=0.3):
            full = await task
            return full, model(IDS).logits

    full, reduced = asyncio.run(main())
    assert torch.equal(full, untouched[1]) and reduced.shape[1] < IDS.shape[1]
    assert_untouched(model, untouched)


def test_a_controller_shared_by_two_threads_mid_batch_is_refused():
    from rlprune.budget import AverageBudget, BudgetController
    from rlprune.errors import InvalidArgumentError

    stream = BudgetController(AverageBudget(0.5))
    stream.assign([0.4, 0.6])
    refused: list[str] = []

    def other() -> None:
        try:
            stream.assign([0.5])
        except InvalidArgumentError as error:
            refused.append(str(error))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert refused and "give each thread its own" in refused[0]
    stream.record([0.4, 0.6])
    thread = threading.Thread(target=stream.assign, args=([0.5],))  # the batch is recorded: now it may ask
    thread.start()
    thread.join(10)
    assert stream.pending == [0.5]
