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


def test_rows_of_the_step_before_survive_a_sweep():
    """Two sets of sequences take turns (a beam search's halves): when rows run out, the rows of
    the set that sat out this step are kept, and only the ended sequences' rows are freed."""
    tables = DecodeBlockTables(4, 8)
    tables.gather([Record(0, (1,)), Record(1, (2,))])
    tables.gather([Record(2, (3,)), Record(3, (4,))])
    row_of_2 = tables.rows[2][0]
    tables.array[row_of_2, 0] = 99  # what a rewrite would undo
    batch = [Record(4, (5,)), Record(1, (2,))]  # 0 ended; 4 is new and finds no free row
    np.testing.assert_array_equal(tables.gather(batch), fresh(batch))
    assert 0 not in tables.rows and tables.rows[2][0] == row_of_2
    assert tables.gather([Record(2, (3,)), Record(3, (4,))])[0, 0] == 99


def test_a_sweep_that_finds_no_stale_row_frees_the_rows_outside_the_batch():
    tables = DecodeBlockTables(2, 4)
    tables.gather([Record(0, (1,))])
    tables.gather([Record(1, (2,))])
    batch = [Record(2, (3,))]  # 0 and 1 ran in the last two steps; one of them must go
    np.testing.assert_array_equal(tables.gather(batch), fresh(batch))
    assert len(tables.rows) <= 2
