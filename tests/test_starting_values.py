"""The page starts within the server's limits (webui/starting.py).

A server whose flags allow less than the page's starting values (64 KV blocks, 48 new tokens,
three example prompts) refused every user's first Add prompts: "KV blocks must be between 1 and
32, got 64". For every limit that bounds a starting value, the page's own fields, as built, are
taken by the session they start; a limit that leaves no session room is refused at start.
"""

from __future__ import annotations

import pytest
from tiny_model import write_tiny_model

from minillama import ConfigError, EngineConfig, LLMEngine, SamplingParams
from webui import Limits, SessionManager, defaults
from webui.layout import build_app
from webui.sessions import CaptureSettings, EngineSettings
from webui.starting import MIB, blocks_within, starting_values

BLOCK = 1000  # bytes of a KV block, for the table below


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> LLMEngine:
    return LLMEngine.from_pretrained(write_tiny_model(tmp_path_factory.mktemp("tiny")),
                                     EngineConfig(device="cpu", num_kv_blocks=1))


# (limits, the starting (KV blocks, max tokens, example prompts)) with blocks of BLOCK bytes
TABLE = {
    "the defaults": ({}, (64, 48, 3)),
    "kv-blocks": ({"max_kv_blocks": 5}, (5, 48, 3)),
    "kv-mb": ({"max_kv_mb": 11 * BLOCK / MIB}, (10, 48, 3)),  # 10 blocks and the scratch block
    "kv-mb-and-blocks": ({"max_kv_mb": 11 * BLOCK / MIB, "max_kv_blocks": 7}, (7, 48, 3)),
    "new-tokens": ({"max_new_tokens": 5}, (64, 5, 3)),
    "sequences": ({"max_sequences": 2}, (64, 48, 2)),
    "one-sequence": ({"max_sequences": 1}, (64, 48, 1)),
    "above-the-defaults": ({"max_kv_blocks": 4096, "max_new_tokens": 4096, "max_sequences": 4096}, (64, 48, 3)),
}


@pytest.mark.parametrize("limits, expected", TABLE.values(), ids=TABLE.keys())
def test_each_starting_value_is_the_default_or_the_limit(limits, expected):
    starting = starting_values(Limits(**limits), BLOCK, len(defaults.EXAMPLE_PROMPTS))
    assert (starting.num_kv_blocks, starting.max_tokens, starting.num_prompts) == expected


@pytest.mark.parametrize("blocks", [0, 1, 1.99])
def test_a_kv_memory_limit_below_one_block_is_refused_naming_the_flag(blocks):
    with pytest.raises(ConfigError, match=r"--max-kv-mb \S+ leaves a session no KV block"):
        starting_values(Limits(max_kv_mb=blocks * BLOCK / MIB or 1e-300), BLOCK, 3)


def test_a_server_without_a_model_starts_no_pool_whatever_its_kv_memory():
    assert starting_values(Limits(max_kv_mb=1e-300), None, 3).num_kv_blocks == defaults.ENGINE.num_kv_blocks


def test_the_session_check_and_the_start_agree_on_what_fits(base):
    """blocks_within is the one count: the page's starting pool is one the session check takes,
    and one block more is refused."""
    block = base.kv_block_bytes(defaults.ENGINE.block_size)
    manager = SessionManager(base, Limits(max_kv_mb=5.5 * block / MIB))
    fits = blocks_within(manager.limits.max_kv_mb, block)
    assert manager.starting.num_kv_blocks == fits == 4
    manager.check_kv_memory(base, fits, defaults.ENGINE.block_size)
    with pytest.raises(ValueError, match="--max-kv-mb"):
        manager.check_kv_memory(base, fits + 1, defaults.ENGINE.block_size)


def page_values(manager: SessionManager) -> tuple[str, int, int]:
    """The Prompts panel's text and max tokens, and the Engine panel's KV blocks, as the page is built."""
    fields = {getattr(block, "elem_id", None): block for block in build_app(manager).blocks.values()}
    return fields["ml-prompts"].value, fields["ml-max-tokens"].value, fields["ml-kv-blocks"].value


# Each below the page's default, with a pool (12 blocks of 16 tokens) that holds each example
# prompt and its answer: a smaller one refuses a request as too long, which is another message.
@pytest.mark.parametrize("limits", [{"max_kv_blocks": 12}, {"max_kv_mb": "12 blocks"}, {"max_new_tokens": 5},
                                    {"max_sequences": 2}], ids=["kv-blocks", "kv-mb", "new-tokens", "sequences"])
def test_the_pages_own_values_are_taken_under_every_limit(base, limits):
    """What a user gets by pressing Add prompts, then Reset, without changing a field."""
    if limits.get("max_kv_mb") == "12 blocks":  # and the scratch block
        limits = {"max_kv_mb": 13 * base.kv_block_bytes(defaults.ENGINE.block_size) / MIB}
    manager = SessionManager(base, Limits(**limits))
    text, max_tokens, kv_blocks = page_values(manager)
    session = manager.open_tab("client")
    ids = manager.add_prompts(session, text.splitlines(), SamplingParams(temperature=0, max_tokens=max_tokens), False)
    assert ids and manager.step(session)
    assert session.debug.engine.config.num_kv_blocks == kv_blocks
    manager.reset(session, EngineSettings(num_kv_blocks=kv_blocks), CaptureSettings())
