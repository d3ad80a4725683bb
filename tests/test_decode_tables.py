"""DecodeBlockTables (minillama/engine/decode_tables.py) gives, step after step, exactly the
zero-padded block tables a fresh build would: while tables grow, are replaced (fork, admission
after preemption), shrink, and sequences come and go under the row limit."""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np

from minillama.engine.decode_tables import DecodeBlockTables


class Record(NamedTuple):
    seq_id: int
    block_ids: tuple[int, ...]


def fresh(records: list[Record]) -> np.ndarray:
    width = max(len(r.block_ids) for r in records)
    return np.array([r.block_ids + (0,) * (width - len(r.block_ids)) for r in records], dtype=np.int64)


def test_gather_matches_a_fresh_build_over_random_steps():
    rng = random.Random(0)
    max_rows, max_blocks = 8, 12
    tables = DecodeBlockTables(max_rows, max_blocks)
    live: dict[int, tuple[int, ...]] = {}
    next_id = 0
    for _ in range(2000):
        # Sequences leave (finish, preempted) and join (admitted, forked), at most max_rows at once.
        for seq_id in [s for s in live if rng.random() < 0.1]:
            del live[seq_id]
        while len(live) < max_rows and rng.random() < 0.5:
            live[next_id] = tuple(rng.randrange(100) for _ in range(rng.randrange(1, max_blocks + 1)))
            next_id += 1
        for seq_id, table in list(live.items()):
            roll = rng.random()
            if roll < 0.2 and len(table) < max_blocks:  # a new block: a new tuple, the old prefix
                live[seq_id] = (*table, rng.randrange(100))
            elif roll < 0.25:  # replaced whole, maybe shorter (readmitted after preemption)
                live[seq_id] = tuple(rng.randrange(100) for _ in range(rng.randrange(1, max_blocks + 1)))
            elif roll < 0.3:  # an equal table in a new tuple
                live[seq_id] = tuple(list(table))
        if not live:
            continue
        batch = [Record(seq_id, table) for seq_id, table in live.items()]
        rng.shuffle(batch)
        np.testing.assert_array_equal(tables.gather(batch), fresh(batch))


def test_an_unchanged_table_is_not_written_again():
    tables = DecodeBlockTables(4, 8)
    table = (5, 6, 7)
    tables.gather([Record(0, table)])
    tables.array[tables.rows[0][0], 0] = 99  # what a rewrite would undo
    assert tables.gather([Record(0, table)])[0, 0] == 99
    assert tables.gather([Record(0, (5, 6, 7, 8))]).tolist() == [[5, 6, 7, 8]]


def test_a_batch_larger_than_its_rows_grows_the_array():
    tables = DecodeBlockTables(2, 4)
    batch = [Record(i, (i, i + 1)) for i in range(5)]
    np.testing.assert_array_equal(tables.gather(batch), fresh(batch))
