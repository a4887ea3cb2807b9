"""Which examples go into which step, on which rank. Pure and seeded: the same seed gives the same order.

Padding is kept small by grouping examples of similar length: each epoch shuffles, then sorts by length
inside windows of a few batches, cuts batches, and shuffles the batch order again.
"""

from __future__ import annotations

import math
import random

WINDOW_BATCHES = 8


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches (lists of example indices) for one epoch; every example appears exactly once."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """This rank's part of a global batch. Every rank gets at least one example (a short last batch is
    filled by repeating its own examples), because a rank without data would stall the collective step."""
    if len(batch) < world:
        batch = [batch[i % len(batch)] for i in range(world)]
    return batch[rank::world]
