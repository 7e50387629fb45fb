"""MicroBatcher scheduling with a recording fake search (no model, no HTTP): deterministic, no timing."""

import asyncio
import threading

import numpy as np

from retrieval_server.search.batcher import MicroBatcher


class RecordingSearch:
    """Answers query ``q`` with id ``int(q)``; the first call blocks until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, queries, k):
        self.batches.append(list(queries))
        if len(self.batches) == 1:
            self.first_started.set()
            self.release.wait(10)
        ids = np.array([[int(q)] * k for q in queries], dtype=np.int64)
        return ids.astype(np.float32), ids


def test_small_request_is_served_between_the_chunks_of_a_big_one():
    async def go():
        search = RecordingSearch()
        batcher = MicroBatcher(search, max_batch=4, max_wait_ms=0.0)
        batcher.start()
        big = asyncio.create_task(batcher.submit([str(i) for i in range(12)], 2))  # three chunks of 4
        await asyncio.get_running_loop().run_in_executor(None, search.first_started.wait, 10)
        small = asyncio.create_task(batcher.submit(["100"], 2))  # arrives while chunk 1 is searched
        await asyncio.sleep(0.05)
        search.release.set()
        small_scores, small_ids = await small
        assert not big.done()  # answered before the big request finished
        scores, ids = await big
        await batcher.stop()
        return search.batches, small_ids, ids

    batches, small_ids, ids = asyncio.run(go())
    assert batches[0] == ["0", "1", "2", "3"]
    assert "100" in batches[1]  # rode along with the big request's second chunk
    assert small_ids.tolist() == [[100, 100]]
    assert ids[:, 0].tolist() == list(range(12))  # chunks reassembled in order


def test_no_batching_keeps_a_big_request_whole():
    async def go():
        search = RecordingSearch()
        search.release.set()
        batcher = MicroBatcher(search, max_batch=4, batching=False)
        batcher.start()
        _, ids = await batcher.submit([str(i) for i in range(10)], 1)
        await batcher.stop()
        return search.batches, ids

    batches, ids = asyncio.run(go())
    assert batches == [[str(i) for i in range(10)]] and ids[:, 0].tolist() == list(range(10))
