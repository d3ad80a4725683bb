"""`first_outside_vocabulary`, the one check every list of token ids passes before it reaches the
engine: a fast path for the common case (a list of plain ints) and a loop that names the first
bad entry. Both must agree on every kind of bad entry, at any position."""

from __future__ import annotations

import random
from enum import IntEnum

import numpy as np
import pytest

from minillama.engine.prompts import first_outside_vocabulary

VOCAB = 100


class Colour(IntEnum):  # an int subclass: a token id as far as Python's ints go
    RED = 7


BAD_ENTRIES = {
    "bool": True,
    "float": 3.0,
    "nan": float("nan"),
    "negative": -1,
    "at-vocab": VOCAB,
    "huge": 2**70,
    "string": "5",
    "none": None,
    "list": [1],
    "numpy-int": np.int64(5),
}


@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
@pytest.mark.parametrize("position", [0, 1, 599])
def test_any_bad_entry_is_named_at_its_position(bad, position):
    ids = [random.Random(position).randrange(VOCAB) for _ in range(600)]
    ids[position] = bad
    assert first_outside_vocabulary(ids, VOCAB) == position
    assert first_outside_vocabulary(tuple(ids), VOCAB) == position


def test_valid_ids_pass_as_list_tuple_and_int_subclass():
    ids = list(range(VOCAB)) * 3
    assert first_outside_vocabulary(ids, VOCAB) is None
    assert first_outside_vocabulary(tuple(ids), VOCAB) is None
    assert first_outside_vocabulary([1, Colour.RED, 2], VOCAB) is None  # the loop takes it
    assert first_outside_vocabulary([], VOCAB) is None  # emptiness is the caller's message
