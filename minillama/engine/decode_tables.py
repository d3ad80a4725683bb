"""The decode batch's block tables, kept from step to step instead of built anew each step.

A decode step hands the attention kernels every running sequence's block table: at batch 256
with ~700-token contexts, 256 x 44 block ids. Flattening those Python tuples into an array
costs the host ~30 ns an id, ~0.3 ms a step, and the tables barely change: a sequence gains a
block once every block_size tokens. So each sequence keeps a row of one persistent array, written
only when its table changed (a new block, a fork, an admission after preemption), and a step
gathers its rows in batch order. (vLLM's persistent batch keeps its block tables the same way.)

A table is a tuple that the block manager replaces whenever it changes (Sequence.block_table),
so "changed" is an identity test against the tuple last written. Row padding past a table's
length is kept at 0, as a table built anew would have it.

Rows are not given back when a sequence ends (nothing here hears of it): when none is free,
the rows of sequences in neither this step's batch nor the step before's are. Two steps, since
steps may alternate between two sets of sequences (a beam search's beams sit out every other
step, LLMEngine._overlaps): freeing the rows of the set that sat out would have them written
again, whole, one step later. The array holds two batches' rows, so that a sweep finds rows to
free: the sequences that ended since the last sweep.
"""

from __future__ import annotations

from collections.abc import Sequence as Records

import numpy as np


class DecodeBlockTables:
    def __init__(self, max_rows: int, max_blocks: int):
        self.array = np.zeros((max_rows, max_blocks), dtype=np.int64)  # [rows, max blocks a sequence holds]
        # seq id -> (its row, the table tuple written there); the rows nobody holds.
        self.rows: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.free_rows = list(range(max_rows - 1, -1, -1))
        self.num_gathers = 0
        self.last_gathered = np.full(max_rows, -1, dtype=np.int64)  # [rows]: the gather each row was last in

    def gather(self, scheduled: Records) -> np.ndarray:
        """[B, width] int64: the block tables of the batch's records (seq_id, block_ids), in
        order, zero-padded to the longest (width)."""
        rows = self.rows
        order = []
        for item in scheduled:
            held = rows.get(item.seq_id)
            if held is None or held[1] is not item.block_ids:  # new here, or its table changed
                held = self._store(item.seq_id, item.block_ids, held, scheduled)
            order.append(held[0])
        width = max(len(item.block_ids) for item in scheduled)
        self.last_gathered[order] = self.num_gathers
        self.num_gathers += 1
        return self.array[order, :width]  # a copy, in batch order

    def _store(self, seq_id: int, table: tuple[int, ...], held: tuple[int, tuple[int, ...]] | None,
               scheduled: Records) -> tuple[int, tuple[int, ...]]:
        """Write `table` into the sequence's row (a new row if it has none)."""
        row, old_length = (self._take_row(scheduled), 0) if held is None else (held[0], len(held[1]))
        self._write(row, table, old_length)
        self.rows[seq_id] = (row, table)
        return row, table

    def _write(self, row: int, table: tuple[int, ...], old_length: int) -> None:
        n = len(table)
        self.array[row, :n] = table
        if old_length > n:
            self.array[row, n:old_length] = 0  # what was past the new table goes back to padding

    def _take_row(self, scheduled: Records) -> int:
        """A free row; when none is, the rows of sequences in neither this batch nor the one
        before (finished, preempted, waiting) are freed first, and failing that those not in this
        batch. Should a batch still find none, the array grows rather than fail."""
        if not self.free_rows:
            in_batch = {item.seq_id for item in scheduled}
            previous = self.num_gathers - 1  # the gather before this one
            stale = [seq_id for seq_id, (row, _) in self.rows.items()
                     if seq_id not in in_batch and self.last_gathered[row] < previous]
            self._free(stale or [seq_id for seq_id in self.rows if seq_id not in in_batch])
        if not self.free_rows:
            rows = len(self.array)
            self.array = np.concatenate([self.array, np.zeros_like(self.array)])
            self.last_gathered = np.concatenate([self.last_gathered, np.full(rows, -1, dtype=np.int64)])
            self.free_rows = list(range(2 * rows - 1, rows - 1, -1))
        return self.free_rows.pop()

    def _free(self, seq_ids: list[int]) -> None:
        for seq_id in seq_ids:
            row, table = self.rows.pop(seq_id)
            self.array[row, : len(table)] = 0
            self.free_rows.append(row)
