"""MemoryBudget: bounds what the recorder keeps, dropping the costliest data first.

Each step, before anything is recorded, the recorder says how many bytes each droppable kind
of data would add. If that would push the total past the limit, the costliest kind still kept
stops being recorded, from this step on (what is already kept stays), and so on down the list
until the step fits or nothing droppable is left. The cheap data (scheduler decisions, tokens,
KV snapshots) is always kept and always counted, so a long enough run ends up keeping only it.

Bytes are payload bytes as the trace file stores them (tensor bytes, 4 per id or probability),
not Python's object overhead.
"""

from __future__ import annotations

# Droppable kinds, costliest first: Q/K rows of every layer, the logit lens (top-5 of every
# layer), then the per-token top-k.
DROP_ORDER = ("attention", "lens", "logits")


class MemoryBudget:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.used = 0
        self.dropped: dict[str, int] = {}  # kind -> the first step it was not kept

    def keeps(self, kind: str) -> bool:
        return kind not in self.dropped

    def charge(self, nbytes: int) -> None:
        """Count data that is always kept."""
        self.used += nbytes

    def plan_step(self, step: int, needs: dict[str, int]) -> list[str]:
        """Reserve this step's droppable data. needs: kind -> bytes it would add, for each
        kind being recorded (0 when this step adds none of it).
        -> the kinds dropped now (they are not recorded from this step on)."""
        total = sum(n for kind, n in needs.items() if self.keeps(kind))
        newly_dropped = []
        for kind in DROP_ORDER:
            if self.used + total <= self.limit:
                break
            if kind in needs and self.keeps(kind):
                self.dropped[kind] = step
                total -= needs.get(kind, 0)
                newly_dropped.append(kind)
        self.used += total
        return newly_dropped
