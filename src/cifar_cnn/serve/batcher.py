"""Dynamic micro-batching: requests that arrive within a few milliseconds of each other share
one forward pass, so many concurrent single-image clients get close to the batched rate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import numpy as np


class MicroBatcher:
    def __init__(self, predict_batch: Callable[[np.ndarray], Sequence], max_batch: int = 64, max_wait_ms: float = 5):
        self.predict_batch = predict_batch  # uint8 (N, S, S, 3) -> one result per image (N rows)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def predict(self, image: np.ndarray):
        """`predict_batch`'s row for one uint8 (S, S, 3) image at the model's input size."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            images = np.stack([image for image, _ in batch])
            try:
                # The forward pass runs in a worker thread so the event loop keeps accepting requests.
                rows = await loop.run_in_executor(None, self.predict_batch, images)
            except Exception as exc:  # deliver the failure to every waiting request, keep serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result(row)


Row = tuple[np.ndarray, float | None]  # one image's calibrated probabilities (classes,) and novelty score


def scored_rows(clf) -> Callable[[np.ndarray], list[Row]]:
    """The batch function for a `Classifier`: images -> one (probabilities, novelty) row each."""

    def predict_batch(images: np.ndarray) -> list[Row]:
        probs, novelty = clf.scores(images)
        return [(p, None if novelty is None else float(n)) for p, n in zip(probs, novelty if novelty is not None
                                                                           else [None] * len(probs), strict=True)]  # fmt: skip

    return predict_batch


def stack_rows(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows back to (probabilities (N, classes), novelty scores (N,) or None), for `to_predictions`."""
    probs = np.stack([p for p, _ in rows])
    novelty = [n for _, n in rows]
    return probs, None if any(n is None for n in novelty) else np.asarray(novelty)
