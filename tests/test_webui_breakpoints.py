"""The breakpoints form: each field makes the breakpoint it names, empty fields make none, and a
bad value is refused with a message naming the field."""

from __future__ import annotations

import math
import re

import pytest

from inspector import AtStep, EntropyAbove, KVUsageAbove, Preemption, SampledProbBelow, SequenceFinished, TextMatches
from webui.breakpoint_form import breakpoints_from_form


def test_an_empty_form_sets_no_breakpoint():
    assert breakpoints_from_form([], "", "", "", "", "") == []
    assert breakpoints_from_form([], "  ", "", " ", "", "") == []


def test_each_field_sets_its_breakpoint():
    made = breakpoints_from_form(["a preemption", "a sequence finishes"], "7", "Par+is", "2.5", "0.1", "80")
    assert made == [Preemption(), SequenceFinished(), AtStep(7), TextMatches("Par+is"), EntropyAbove(2.5),
                    SampledProbBelow(0.1), KVUsageAbove(80.0)]


def test_each_event_is_armed_once_however_often_it_is_sent():
    """The page sends each ticked event once; a script sent one 70,000 times in a 1 MB call, and
    each copy was checked at every step and listed in every message."""
    made = breakpoints_from_form(["a preemption"] * 70_000 + ["a copy-on-write", "a preemption"], "", "", "", "", "")
    assert [type(b).__name__ for b in made] == ["Preemption", "CopyOnWrite"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((["a crash"], "", "", "", "", ""), "unknown breakpoint 'a crash'"),
        (([], "-1", "", "", "", ""), "'stop at step' must be a whole number >= 0"),
        (([], "2.5", "", "", "", ""), "'stop at step' must be a whole number >= 0"),
        (([], "nan", "", "", "", ""), "'stop at step' must be a number, got 'nan'"),
        (([], "seven", "", "", "", ""), "'stop at step' must be a number, got 'seven'"),
        (([], "1e20", "", "", "", ""), "'stop at step' must be at most 2,147,483,647, got 1e+20"),
        (([], "9" * 400, "", "", "", ""), "'stop at step' must be a whole number >= 0, got inf"),
        (([], "", "(", "", "", ""), "is not a regular expression RE2 accepts"),
        (([], "", r"(a)\1", "", "", ""), "no backreferences or lookaround"),
        (([], "", "((a{100}){100}){100}", "", "", ""), "invalid repetition size"),
        (([], "", "x" * 201, "", "", ""), "the limit is 200"),
        (([], "", "a\ud800", "", "", ""), "character 1 is U+D800, a lone surrogate"),
        (([], "", "", "-1", "", ""), "'entropy above' must be a number >= 0"),
        (([], "", "", "inf", "", ""), "'entropy above' must be a number, got 'inf'"),
        (([], "", "", "", "0", ""), "'sampled probability below' must be in (0, 1]"),
        (([], "", "", "", "1.5", ""), "'sampled probability below' must be in (0, 1]"),
        (([], "", "", "", "", "100"), "'KV usage above' must be a percentage in [0, 100)"),
    ],
)
def test_a_bad_value_names_its_field(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        breakpoints_from_form(*fields)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", [r"^([\w\s]+)+#", r"(a+)+$", r"(a|aa)+b", r"(.*a){12}"])
def test_a_backtracking_pattern_matches_in_linear_time(pattern):
    """Patterns that make a backtracking matcher take minutes on a short text (and, with the GIL
    held, freeze every session of the server) run on RE2 in time linear in the text."""
    breakpoint = breakpoints_from_form([], "", pattern, "", "", "")[0]
    assert isinstance(breakpoint, TextMatches)
    text = "a" * 20_000 + "!"  # Python's re needs 2**n steps for the first three on 30 characters
    assert breakpoint.regex.search(text) is None or pattern == r"(.*a){12}"


@pytest.mark.parametrize(
    "fields",
    [
        (["x" * 3000], "", "", "", "", ""),
        ([], "y" * 3000, "", "", "", ""),
        ([], "", "", "z" * 3000, "", ""),
        ([], "", "", "", "w" * 3000, ""),
        ([], "", "", "", "", "v" * 3000),
    ],
)
def test_a_refused_value_is_quoted_short(fields):
    """A field's 3,000 characters were quoted whole: a message of as many, in one line."""
    with pytest.raises(ValueError) as refused:
        breakpoints_from_form(*fields)
    assert len(str(refused.value)) < 120


@pytest.mark.parametrize("text", ["٣", "1_000", "inf", "nan", "0x10", "1e", "--1", "1.2.3", "³"])
def test_a_number_is_written_in_ascii_digits(text):
    """float() reads other scripts' digits, underscores, inf and nan: the field held a value it
    did not show. Each is refused as no number."""
    with pytest.raises(ValueError, match="must be a number"):
        breakpoints_from_form([], text, "", "", "", "")


def test_minus_zero_is_zero_and_plain_spellings_are_taken():
    made = breakpoints_from_form([], "+3", "", "-0", ".5", "1e1")
    assert made == [AtStep(3), EntropyAbove(0.0), SampledProbBelow(0.5), KVUsageAbove(10.0)]
    assert math.copysign(1.0, made[1].threshold) == 1.0  # described as "above 0 nats", not "-0"


@pytest.mark.parametrize("text", ["٣", "１２", "1_000", "inf", "NaN", "Infinity", "0x1", " 1e ", ""])
def test_the_settings_fields_read_typed_numbers_alike(text):
    """The seed, max tokens and temperature fields take text too (a script's call, or a number
    field's string): read by the same rule as the breakpoints' fields."""
    from webui.handlers import _number, _whole

    for read in (lambda: _number(text, "temperature"), lambda: _whole(text, "seed", minimum=0)):
        with pytest.raises(ValueError, match="temperature|seed"):
            read()
    assert _number(" -0 ", "temperature") == 0.0 and _whole("+7", "seed", minimum=0) == 7
