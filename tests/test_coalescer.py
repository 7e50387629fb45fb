"""The plugin's one micro-batcher (retrieval client, rollout ``hf``, the evaluation's vLLM policy)."""

import asyncio

import pytest

from search_r1_plugin.coalescer import Coalescer


def batches_seen(fail_on=None, delay=0.05, per_item_error=None):
    seen, running = [], []

    async def run(items):
        running.append(1)
        seen.append((list(items), len(running)))
        try:
            await asyncio.sleep(delay)
            if fail_on is not None and fail_on in items:
                raise RuntimeError(f"batch with {fail_on} died")
            return [ValueError(f"bad {x}") if x == per_item_error else x * 10 for x in items]
        finally:
            running.pop()

    return seen, run


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_a_caller_cancelled_mid_batch_leaves_every_other_caller_answered(one_at_a_time):
    seen, run = batches_seen()

    async def main():
        c = Coalescer(run, max_batch=8, max_wait_s=0.01, one_at_a_time=one_at_a_time)
        tasks = [asyncio.ensure_future(c.submit(i)) for i in range(5)]
        await asyncio.sleep(0.03)  # the batch is running now
        tasks[2].cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    results = asyncio.run(main())
    assert results[:2] + results[3:] == [0, 10, 30, 40] and isinstance(results[2], asyncio.CancelledError)
    assert [items for items, _ in seen] == [[0, 1, 2, 3, 4]]  # one batch


def test_a_failed_batch_fails_its_own_callers_only_and_one_bad_item_only_itself():
    seen, run = batches_seen(fail_on=3, per_item_error=6)

    async def main():
        c = Coalescer(run, max_batch=2, max_wait_s=0.01)
        return await asyncio.gather(*(c.submit(i) for i in range(8)), return_exceptions=True)

    results = asyncio.run(main())
    assert [items for items, _ in seen] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # max_batch splits, all sent at once
    assert max(concurrent for _, concurrent in seen) > 1
    assert results[:2] == [0, 10] and results[4:6] == [40, 50] and results[7] == 70
    assert all(isinstance(r, RuntimeError) for r in results[2:4]) and isinstance(results[6], ValueError)


def test_equal_keys_share_a_slot_and_a_result():
    seen, run = batches_seen()

    async def main():
        c = Coalescer(run, max_batch=8, max_wait_s=0.01, key=lambda x: x)
        return await asyncio.gather(*(c.submit(x) for x in [1, 2, 1, 1, 3]))

    assert asyncio.run(main()) == [10, 20, 10, 10, 30]
    assert [items for items, _ in seen] == [[1, 2, 3]]


def test_one_at_a_time_runs_batches_in_turn_and_gathers_what_arrives_meanwhile():
    seen, run = batches_seen(delay=0.1)

    async def main():
        c = Coalescer(run, max_batch=4, max_wait_s=0.01, one_at_a_time=True)
        first = [asyncio.ensure_future(c.submit(i)) for i in range(2)]
        await asyncio.sleep(0.03)  # the first batch runs; these wait for it
        later = [asyncio.ensure_future(c.submit(i)) for i in range(2, 8)]
        return await asyncio.wait_for(asyncio.gather(*first, *later), 5)

    assert asyncio.run(main()) == [i * 10 for i in range(8)]
    assert [items for items, _ in seen] == [[0, 1], [2, 3, 4, 5], [6, 7]]
    assert all(concurrent == 1 for _, concurrent in seen)


def test_a_new_event_loop_starts_clean():
    seen, run = batches_seen(delay=0.0)
    c = Coalescer(run, max_batch=4, max_wait_s=0.01)
    assert asyncio.run(c.submit(1)) == 10
    assert asyncio.run(c.submit(2)) == 20
