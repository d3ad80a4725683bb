"""A trace file from someone else: every field of the schema, walked from Trace's type hints
(never a hand-written list), holding what a hostile file would put there.

- Text fields hold markup: the loader takes them, and no view's output (every HTML panel, every
  figure's JSON, at every step, for every sequence selection) carries the markup raw.
- Enum fields hold markup, or any value not in the enum: the loader refuses the file.
- Number fields hold out-of-range values: the loader refuses the file, or every view renders.

The base trace is a real recording of a tiny random model (test_inspector_support), with the
logit lens on, a fork, parallel samples and a beam search, so every field of the schema is present, saved and
then edited as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly.io as pio
import pytest
from test_inspector_support import add_forks, record_tiny_run

from inspector import CapturePolicy, TraceError, diff_traces, load, save
from inspector.trace import model
from inspector.trace.bounds import MAX_SEQ_ID, MAX_TOKEN_TEXT, MaxLength, SeqId
from inspector.trace.model import KVSnapshot, Trace
from inspector.views import (
    Selection,
    attention_figure,
    block_tables_html,
    compare_figure,
    compare_html,
    kv_cache_figure,
    logit_lens_figure,
    logits_figure,
    logits_history_figure,
    resolve,
    step_details_html,
    text_html,
    text_parts,
    timeline_figure,
)
from webui.render import text_carrier

# Markup, quotes, and a right-to-left override (it would reverse the rest of the line it is shown in).
HOSTILE = "<img src=x onerror=alert(1)>\"'&\u202e"
RAW = "<img src=x onerror=alert(1)>"
OVERRIDE = "\u202e"


def carries_override(output: str) -> bool:
    """Whether a view's output holds the override character, as itself or, in a figure's JSON,
    as an escape the browser decodes into it."""
    if OVERRIDE in output:
        return True
    try:
        return OVERRIDE in json.dumps(json.loads(output), ensure_ascii=False)
    except ValueError:  # HTML
        return False

Path_ = tuple[str | int, ...]  # keys from the JSON document's root into a value


def leaf_kinds(kind: Any, owner: str = "Trace") -> Iterator[tuple[str, str, Any]]:
    """(class, field, leaf kind) of every str and Literal field reachable from `kind`'s type
    hints: what the schema holds, with no data."""
    kind = _unwrap(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind) or typing.is_typeddict(kind):
        for name, hint in typing.get_type_hints(kind, include_extras=True).items():
            for cls, field, leaf in leaf_kinds(hint, kind.__name__):
                yield (cls, field or name, leaf)
    elif origin in (list, dict):
        yield from leaf_kinds(args[-1], owner)
    elif origin in (typing.Union, types.UnionType):  # X | None
        yield from leaf_kinds(next(a for a in args if a is not type(None)), owner)
    elif origin is typing.Literal or kind in (str, int, float, bool):
        yield (owner, "", kind)


def leaves(kind: Any, data: Any, path: Path_ = (), owner: str = "Trace", field: str = "") -> Iterator[
        tuple[str, str, Any, Path_]]:
    """(class, field, leaf kind, path) of every scalar value in the JSON `data` of type `kind`,
    None included (an optional field that is unset), tensors excluded."""
    kind = _unwrap(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None (or bool | Literal: the base trace holds a bool)
        inner = next(a for a in args if a is not type(None))
        if data is None:
            yield (owner, field, _unwrap(inner), path)
        else:
            yield from leaves(inner, data, path, owner, field)
    elif dataclasses.is_dataclass(kind) or typing.is_typeddict(kind):
        for name, hint in typing.get_type_hints(kind, include_extras=True).items():
            if name in data:
                yield from leaves(hint, data[name], (*path, name), kind.__name__, name)
    elif origin is list:
        for i, value in enumerate(data):
            yield from leaves(args[0], value, (*path, i), owner, field)
    elif origin is dict:
        for key, value in data.items():
            yield from leaves(args[1], value, (*path, key), owner, field)
    elif origin is typing.Literal or kind in (str, int, float, bool):
        yield (owner, field, kind, path)


def _unwrap(kind: Any) -> Any:
    return typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind


TEXT_FIELDS = sorted({(cls, field) for cls, field, leaf in leaf_kinds(Trace) if leaf is str})
ENUM_FIELDS = sorted({(cls, field) for cls, field, leaf in leaf_kinds(Trace) if typing.get_origin(leaf) is typing.Literal})
NUMBER_FIELDS = sorted({(cls, field) for cls, field, leaf in leaf_kinds(Trace) if leaf in (int, float)})


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    # A budget of 8 tokens chunks the prompts and keeps the third waiting for tokens (the causes).
    run = record_tiny_run(CapturePolicy(logit_lens=True, attention_requests=(0, 2)), max_num_batched_tokens=8)
    add_forks(run, beams=True)  # a fork with its copy on write, samples, beams: the fork fields of the schema
    trace = run.session.trace
    path = tmp_path_factory.mktemp("hostile") / "base.mltrace"
    save(trace, path)
    return path


@pytest.fixture(scope="module")
def document(saved) -> dict:
    with zipfile.ZipFile(saved) as zf:
        document = json.loads(zf.read("trace.json"))
    next(iter(document["trace"]["sequences"].values()))["params"]["stop_token_ids"] = [7]  # the runs set none
    return document


def edited(saved: Path, document: dict, edits: list[tuple[Path_, Any]], out: Path) -> Path:
    """A copy of the saved trace with the values at `edits`' paths replaced (under "trace")."""
    document = json.loads(json.dumps(document))
    for path, value in edits:
        node = document["trace"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    with zipfile.ZipFile(saved) as zf:
        tensors = zf.read("tensors.safetensors")
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("trace.json", json.dumps(document))
        zf.writestr("tensors.safetensors", tensors)
    return out


def every_output(trace: Trace, steps: set[int] | None = None,
                 seq_ids: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """(what, text) of every panel at every step (or at `steps`): the HTML builders, and each
    figure as the JSON the browser gets, for the automatic selection and for every sequence (or
    those of `seq_ids` the trace has) with each kind of attention selection."""
    chosen = sorted(trace.sequences) if seq_ids is None else sorted(seq_ids & trace.sequences.keys())
    selections = [Selection()] + [Selection(seq_id=s, head=h, full_matrix=m) for s in chosen
                                  for h, m in ((0, False), (None, False), (0, True))]
    for index in sorted(steps) if steps is not None else range(len(trace.steps)):
        for builder in (text_html, block_tables_html, step_details_html):
            yield f"{builder.__name__} at {index}", builder(trace, index)
        # What the page's Text panel is drawn from: the parts, as the hidden field carries them.
        yield f"text_carrier at {index}", text_carrier(text_parts(trace, index))
        yield f"timeline at {index}", pio.to_json(timeline_figure(trace, index), validate=False)
        for selection in selections:
            for builder in (kv_cache_figure, attention_figure, logits_figure, logits_history_figure, logit_lens_figure):
                figure = builder(trace, index, selection)
                yield f"{builder.__name__} at {index}, {selection}", pio.to_json(figure, validate=False)


def test_the_base_trace_holds_every_field_of_the_schema(document):
    found = {(cls, field) for cls, field, _, _ in leaves(Trace, document["trace"])}
    assert set(TEXT_FIELDS) | set(ENUM_FIELDS) | set(NUMBER_FIELDS) <= found
    assert ("LogitLens", "top_texts") in TEXT_FIELDS and ("ScheduleRecord", "phase") in ENUM_FIELDS


def hostile_text(document: dict, path: Path_) -> str:
    """HOSTILE, except in a sequence's text, which must be its tokens' deltas joined (each of
    them HOSTILE then): validate.py refuses a text the deltas do not make."""
    if len(path) == 3 and path[0] == "sequences" and path[2] == "text":
        return HOSTILE * len(document["trace"]["sequences"][path[1]]["output_ids"])
    return HOSTILE


FINGERPRINT = ("ModelInfo", "weights_fingerprint")  # a text of 16 hex digits, or the file is refused


def test_markup_in_every_text_field_never_reaches_a_view_raw(saved, document, tmp_path):
    texts = [path for cls, field, leaf, path in leaves(Trace, document["trace"]) if leaf is str and (cls, field) != FINGERPRINT]
    assert {(cls, field) for cls, field, leaf, _ in leaves(Trace, document["trace"]) if leaf is str} == set(TEXT_FIELDS)
    trace = load(edited(saved, document, [(path, hostile_text(document, path)) for path in texts],
                        tmp_path / "xss.mltrace"))
    assert trace.model.name == HOSTILE and trace.steps[0].schedule.phase in ("prefill", "decode")
    shown = 0
    for what, output in every_output(trace):
        assert RAW not in output and not carries_override(output), what
        shown += "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;⟨U+202E⟩" in output
    assert shown  # the texts are shown, escaped
    # The Compare tab's view of it, beside the file it was made from and beside itself: a
    # divergent request's top-k, prompts, settings, causes and titles all pass through escape.
    base = load(saved)
    for a, b in ((trace, base), (base, trace), (trace, trace)):
        diff = diff_traces(a, b)
        panel, figure = compare_html(diff, HOSTILE, HOSTILE), pio.to_json(compare_figure(diff), validate=False)
        assert RAW not in panel and RAW not in figure
        assert not carries_override(panel) and not carries_override(figure)
        assert "&lt;img src=x onerror=alert(1)&gt;" in panel


def test_a_fingerprint_that_is_not_16_hex_digits_is_refused(saved, document, tmp_path):
    path = next(p for c, f, _, p in leaves(Trace, document["trace"]) if (c, f) == FINGERPRINT)
    for value in (HOSTILE, "0123456789ABCDEF", "0" * 17):
        with pytest.raises(TraceError, match="weights_fingerprint must be 16 hexadecimal digits"):
            load(edited(saved, document, [(path, value)], tmp_path / "fingerprint.mltrace"))


def text_limit(kind: Any) -> int | None:
    """The MaxLength a text field's type hint carries (through lists and "| None"), or None."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return next((m.high for m in kind.__metadata__ if isinstance(m, MaxLength)), None)
    if origin in (list, typing.Union, types.UnionType):
        return next((limit for a in args if (limit := text_limit(a)) is not None), None)
    return None


def hint_of(cls: str, field: str) -> Any:
    classes = {c.__name__: c for c in vars(model).values() if isinstance(c, type)}
    return typing.get_type_hints(classes[cls], include_extras=True)[field]


BOUNDED_TEXT_FIELDS = [(cls, field) for cls, field in TEXT_FIELDS if text_limit(hint_of(cls, field)) is not None]


def test_every_token_text_name_and_message_is_bounded():
    """A token's text, a name or a message is one chip, label or line of a panel: each field
    holding one carries a MaxLength. The others are whole texts, bounded by their tokens."""
    unbounded = set(TEXT_FIELDS) - set(BOUNDED_TEXT_FIELDS)
    assert unbounded == {("ModelInfo", "weights_fingerprint"), ("SequenceRecord", "prompt_text"),
                         ("SequenceRecord", "text")}


@pytest.mark.parametrize(("cls", "field"), BOUNDED_TEXT_FIELDS)
def test_a_text_over_its_fields_limit_is_refused_at_every_place_it_occurs(saved, document, tmp_path, cls, field):
    """64 MB of one letter deflate to 64 KB: unbounded, one such token text was a label of the
    Next token tab, or a chip's hover, on every redraw."""
    limit = text_limit(hint_of(cls, field))
    paths = [path for c, f, leaf, path in leaves(Trace, document["trace"]) if (c, f) == (cls, field) and leaf is str]
    assert paths
    for path in paths[:: max(1, len(paths) // 4)]:  # the first, the last and a few between
        where = ".".join(map(str, ("trace", *path)))
        with pytest.raises(TraceError, match=f"{re.escape(where)}: expected a text of at most {limit:,} characters"):
            load(edited(saved, document, [(path, "x" * (limit + 1))], tmp_path / "long.mltrace"))


def test_a_prompt_text_longer_than_its_tokens_can_say_is_refused(saved, document, tmp_path):
    key, seq = next(iter(document["trace"]["sequences"].items()))
    limit = MAX_TOKEN_TEXT * len(seq["prompt_ids"])
    load(edited(saved, document, [(("sequences", key, "prompt_text"), "x" * limit)], tmp_path / "ok.mltrace"))
    with pytest.raises(TraceError, match=f"sequence {key}: a prompt text of {limit + 1:,} characters"):
        load(edited(saved, document, [(("sequences", key, "prompt_text"), "x" * (limit + 1))], tmp_path / "long.mltrace"))


@pytest.mark.parametrize(("cls", "field"), ENUM_FIELDS)
def test_markup_or_an_unknown_value_in_an_enum_field_is_refused(saved, document, tmp_path, cls, field):
    path = next(p for c, f, _, p in leaves(Trace, document["trace"]) if (c, f) == (cls, field))
    for value in (HOSTILE, "chunked", 3, []):
        with pytest.raises(TraceError, match="expected one of"):
            load(edited(saved, document, [(path, value)], tmp_path / "enum.mltrace"))


HOSTILE_NUMBERS = (-1, 0, 2**31, 2**63, 10**400, 1e308, -0.5, 1.5)  # ints, and floats of either sign


@pytest.mark.parametrize(("cls", "field"), NUMBER_FIELDS)
def test_a_number_out_of_range_is_refused_or_every_view_renders(saved, document, tmp_path, cls, field):
    """Item 5 of the issue: a loaded trace is valid in every field, or refused whole; what
    loads never makes a view raise (the UI session would be stuck). The views are drawn at the
    first and last steps and at the edited one (the timeline and histories span every step)."""
    path = next(p for c, f, _, p in leaves(Trace, document["trace"]) if (c, f) == (cls, field))
    steps = {0, len(document["trace"]["steps"]) - 1} | ({path[1]} if path[0] == "steps" else set())
    for value in HOSTILE_NUMBERS:
        try:
            trace = load(edited(saved, document, [(path, value)], tmp_path / "number.mltrace"))
        except TraceError:
            continue
        # A sequence's figures read that sequence's records: the edited record's sequences (and
        # the value itself where it names one) are drawn selected, beside the automatic
        # selection and sequence 0. Every sequence of 18 was 8x the figures for the same reads.
        seq_ids = {0, *sequences_named(document["trace"], path)} | ({value} if isinstance(value, int) else set())
        for _ in every_output(trace, steps, seq_ids):
            pass


def names_a_sequence(hint: Any) -> bool:
    """Whether a field typed `hint` holds sequence ids: SeqId, alone, optional or in a list."""
    if typing.get_origin(hint) is typing.Annotated:
        return SeqId.__metadata__[0] in hint.__metadata__
    return any(names_a_sequence(arg) for arg in typing.get_args(hint))


# (class, field) of every field the schema types as sequence ids, and Trace's dicts keyed by them.
SEQ_ID_FIELDS = {(cls.__name__, name) for cls in vars(model).values() if dataclasses.is_dataclass(cls)
                 for name, hint in typing.get_type_hints(cls, include_extras=True).items() if names_a_sequence(hint)}
KEYED_BY_SEQ_ID = {name for name, hint in typing.get_type_hints(Trace).items()
                   if typing.get_origin(hint) is dict and typing.get_args(hint)[0] is int}


def sequences_named(document: dict, path: Path_) -> set[int]:
    """The sequences the records along `path` belong to or name: the key it takes in a dict
    keyed by sequence id, and each sequence-id field of the records it passes through."""
    records = {path[:i] for i in range(len(path))}
    named = {int(path[1])} if path[0] in KEYED_BY_SEQ_ID else set()
    for cls, field, _, at in leaves(Trace, document):
        if (cls, field) in SEQ_ID_FIELDS and isinstance(value := _at(document, at), int):
            # the field's own value (at = record + (field,)) or a list's item (record + (field, i))
            named |= {value} if at[:-1] in records or at[:-2] in records else set()
    return named


def _at(document: dict, path: Path_) -> Any:
    for key in path:
        document = document[key]
    return document


SEQ_ID_RANGE = SeqId.__metadata__[0]


def shifted(value: Any, kind: Any, by: int) -> Any:
    """`value` (of type hint `kind`) with every sequence id in it moved up by `by`: each field the
    schema types SeqId (found from the type hints, never a hand-written list), the dicts keyed
    by sequence id (Trace.sequences and .attention) and the KV snapshots' table_seq_ids."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value is None:
        return None
    if origin is typing.Annotated:
        return value + by if SEQ_ID_RANGE in kind.__metadata__ else value
    if origin in (typing.Union, types.UnionType):
        return shifted(value, next(a for a in args if a is not type(None)), by)
    if origin is list:
        return [shifted(v, args[0], by) for v in value]
    if origin is dict:  # the only dicts keyed by int are keyed by sequence id
        return {k + by if args[0] is int else k: shifted(v, args[1], by) for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind, include_extras=True)
        changes = {f.name: shifted(getattr(value, f.name), hints[f.name], by) for f in dataclasses.fields(kind)}
        if kind is KVSnapshot:
            changes["table_seq_ids"] = value.table_seq_ids + by
        return kind(**changes)
    return value


@pytest.mark.parametrize("over", [0, 1])
def test_sequence_ids_load_up_to_the_bound_the_inspectors_calls_take(saved, tmp_path, over):
    """Every id a view reads from a trace goes back into the inspector's calls (Selection,
    breakpoints), which take ids up to minillama's MAX_COUNT: a file whose ids reach it loads and
    every view renders; one past it is refused naming the field. (An id of 2**62 loaded, then
    made every redraw of the UI raise in Selection.)"""
    trace = load(saved)
    path = tmp_path / "ids.mltrace"
    shifted_trace = shifted(trace, Trace, MAX_SEQ_ID - max(trace.sequences) + over)
    if over:  # save() checks the file by load()'s code: it writes none load() would refuse
        with pytest.raises(TraceError, match=r"seq_id: expected a number in \[0, 2,147,483,647\], got 2147483648"):
            save(shifted_trace, path)
        assert not path.exists()
        return
    save(shifted_trace, path)
    loaded = load(path)
    assert max(loaded.sequences) == MAX_SEQ_ID and len(loaded.sequences) == len(trace.sequences)
    steps = {0, len(loaded.steps) - 1}
    for _ in every_output(loaded, steps):
        pass
    assert all(resolve(loaded, Selection(), index).seq_id in loaded.sequences for index in steps)
