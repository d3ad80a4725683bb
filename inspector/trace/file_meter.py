"""FileMeter: while a recording grows, is it still a trace that a file may hold?

save() refuses a trace over one of the file's limits (TraceTooLarge), and load() would refuse
the file. A recording only learns this when it is saved; the meter says it as soon as a step
takes the trace past a limit, by the very checks save() and load() use (one definition of each
limit), on counts kept as the trace grows:

- trace.json's elements and bytes (tracefile.MAX_JSON_ELEMENTS, MAX_JSON_BYTES), exactly: each
  step and each event is encoded once, when the meter first sees it (a recording never changes
  a step or an event it has appended), and the rest of the trace (its model, engine settings,
  sequences and attention stores: what still changes) on every count. A list's parts join with
  one comma each, which the sum adds (see `_Part.joined`);
- the tensors' count (tensor_member.MAX_TENSORS), exactly, and the file's unpacked bytes
  (tracefile.DEFAULT_MAX_BYTES): the JSON and the tensors' bytes exactly, the safetensors
  header over-estimated (HEADER_BYTES_PER_TENSOR a tensor), so the meter may speak a little
  before save() would refuse, never after;
- what the views draw (validate.py's timeline cells and tokens, validate_arrays.py's snapshot
  blocks and attention store positions).

A trace only grows, so once past a limit it stays past it: the meter keeps the first message.
Cost of a count: the new steps and events once, and the sequences' tokens (a list of ints
encoded, a fraction of what the text panel draws on each redraw); a count with no new step or
event since the last answers from the last.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass

import torch

from inspector.trace import tensor_member, tracefile
from inspector.trace.codec import encode
from inspector.trace.json_limits import check_counts, scan
from inspector.trace.model import SCHEMA_VERSION, Trace, TraceTooLarge
from inspector.trace.validate import check_view_sizes
from inspector.trace.validate_arrays import check_snapshot_size, check_store_length

# A safetensors header entry is {"name":{"dtype":"F32","shape":[a,b,c,d],"data_offsets":[x,y]}}:
# its name, then under 120 bytes (4 dims and 2 offsets of at most 20 digits each, the keys).
HEADER_BYTES_PER_TENSOR = 128
WHAT = "the trace file's trace.json"


@dataclass(frozen=True)
class FileSize:
    """What a trace's file would hold, as save() counts it."""

    elements: int  # trace.json's JSON elements (json_limits.scan)
    json_bytes: int  # trace.json's bytes
    tensors: int  # tensors in tensors.safetensors
    tensor_bytes: int  # their payload bytes (the header aside)
    names_bytes: int  # the bytes of their names (the header's bulk)

    def __add__(self, other: FileSize) -> FileSize:
        return FileSize(self.elements + other.elements, self.json_bytes + other.json_bytes,
                        self.tensors + other.tensors, self.tensor_bytes + other.tensor_bytes,
                        self.names_bytes + other.names_bytes)

    @property
    def unpacked_bound(self) -> int:
        """At least the file's unpacked size: both members, the header over-estimated."""
        header = 8 + self.names_bytes + HEADER_BYTES_PER_TENSOR * self.tensors
        return self.json_bytes + self.tensor_bytes + header


NOTHING = FileSize(0, 0, 0, 0, 0)


class FileMeter:
    """Measures one growing trace (a recording's): `over_limit` after each step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # two renders of one session may ask at once
        self._trace: Trace | None = None
        # The steps and events seen so far, each counted once as encoded in the file, and summed
        # as they come (a sum over all of them at every count would be quadratic in the run).
        self._steps = _Part()
        self._events = _Part()
        self._last: tuple[int, int] | None = None  # (steps, events) at the last count
        self._passed: str | None = None

    def over_limit(self, trace: Trace) -> str | None:
        """The first limit of a trace file that `trace` is past (TraceTooLarge's message, naming
        the limit), or None while save() would write it."""
        with self._lock:
            self._follow(trace)
            if self._passed is None and self._last != (len(trace.steps), len(trace.events)):
                try:
                    self._check(trace)
                except TraceTooLarge as error:
                    self._passed = str(error)
                self._last = (len(trace.steps), len(trace.events))
            return self._passed

    def measure(self, trace: Trace) -> FileSize:
        """What `trace`'s file would hold, counted as the meter counts."""
        with self._lock:
            self._follow(trace)
            return self._size(trace)

    def _follow(self, trace: Trace) -> None:
        """Start over for another trace (the recorder cleared), counting from nothing."""
        if trace is not self._trace:
            self._trace, self._steps, self._events, self._last, self._passed = trace, _Part(), _Part(), None, None

    def _check(self, trace: Trace) -> None:
        """TraceTooLarge for the first limit `trace` is past, checked by save()'s and load()'s code."""
        new_steps = trace.steps[self._steps.count:]
        size = self._size(trace)  # first: it counts the new steps
        for step in new_steps:
            check_snapshot_size(step.kv, f"step {step.index}")
        for seq_id, store in trace.attention.items():
            check_store_length(store.length, f"attention store of sequence {seq_id}")
        check_view_sizes(trace)
        tracefile.check_member_sizes("the trace file", size.json_bytes, size.unpacked_bound - size.json_bytes,
                                     tracefile.DEFAULT_MAX_BYTES)
        # The depth is the schema's (9 levels), whatever the run: only the elements grow.
        check_counts(0, size.elements, WHAT, tracefile.MAX_JSON_DEPTH, tracefile.MAX_JSON_ELEMENTS)
        tensor_member.check_tensor_count(size.tensors, f"the trace file's {tracefile.TENSORS_MEMBER}")

    def _size(self, trace: Trace) -> FileSize:
        self._steps.follow(trace.steps, "trace.steps")
        self._events.follow(trace.events, "trace.events")
        # The rest of the document, with the two lists empty: their brackets are counted here.
        tensors: dict[str, torch.Tensor] = {}
        rest = encode(dataclasses.replace(trace, steps=[], events=[]), tensors, "trace")
        document = {"format": tracefile.FORMAT, "schema_version": SCHEMA_VERSION, "trace": rest}
        return _size_of(document, tensors) + self._steps.joined() + self._events.joined()


class _Part:
    """One of the trace's growing lists (its steps or its events), counted as it grows."""

    def __init__(self) -> None:
        self.count = 0  # its items counted so far
        self.total = NOTHING  # their sizes, summed

    def follow(self, items: list, path: str) -> None:
        """Count the items appended since the last call (a recording never changes one it has
        appended)."""
        for i in range(self.count, len(items)):
            self.total = self.total + _measured(items[i], f"{path}.{i}")
        self.count = len(items)

    def joined(self) -> FileSize:
        """The items as a JSON list, with the comma between each two (an element and a byte
        each); the list's brackets are counted with the empty list it fills."""
        commas = max(self.count - 1, 0)
        return dataclasses.replace(self.total, elements=self.total.elements + commas,
                                   json_bytes=self.total.json_bytes + commas)


def _measured(value: object, path: str) -> FileSize:
    """The size of `value` in the file, encoded at `path` as save() encodes it there (the path
    names its tensors, and the names are in the JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    return _size_of(encode(value, tensors, path), tensors)


def _size_of(encoded: object, tensors: dict[str, torch.Tensor]) -> FileSize:
    """The size of an encoded value and its tensors, the JSON as save() writes it (a NaN, which
    save() refuses as no number, is counted as written)."""
    raw = json.dumps(encoded, separators=tracefile.JSON_SEPARATORS).encode()
    return FileSize(scan(raw)[1], len(raw), len(tensors), sum(t.nbytes for t in tensors.values()),
                    sum(len(name) for name in tensors))
