"""A flag that takes one value, given twice, is refused in one line naming both values.

`python -m minillama --prompt hi --max-tokens 1 --max-tokens 50` ran with 50 tokens and dropped
the 1 unsaid (argparse keeps the last value): what a wrapper script that appends its own flags
to a user's would do, the user never told. Every parser of every command line is walked here,
so a flag added later is covered too. A flag meant to be repeated (--prompt) still repeats."""

from __future__ import annotations

import argparse

import pytest

import app
import benchmarks.engine
import benchmarks.recording
import benchmarks.sharing
import benchmarks.webui
import inspector.__main__
import minillama.__main__
from minillama.cli.errors import ArgumentParser
from minillama.errors import ConfigError

CLIS = {"minillama": minillama.__main__.main, "inspector": inspector.__main__.main, "app": app.main,
        "bench": benchmarks.engine.main, "recording": benchmarks.recording.main,
        "sharing": benchmarks.sharing.main, "bench-ui": benchmarks.webui.main}
# Values tried in turn until the flag takes one alone (its type and choices decide which).
CANDIDATES = ("3", "1", "0.5", "x.mltrace")


def parsers_of(main, monkeypatch) -> list[ArgumentParser]:
    """The parser `main` builds, and its subcommands' parsers: caught as main parses, before
    anything runs (some command lines build theirs inside main)."""
    caught: list[ArgumentParser] = []

    class Caught(Exception):
        pass

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise Caught

    monkeypatch.setattr(ArgumentParser, "parse_args", catch)
    main(["--help"])  # run_cli reports Caught as an internal error; the parser is what is wanted
    monkeypatch.undo()
    parser = caught[0]
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for a in subcommands for p in a.choices.values())]


def one_value(parser: ArgumentParser, before: list[str], action: argparse.Action) -> str:
    """A value the action's flag takes alone after `before`: its first choice, if it has any."""
    flag = action.option_strings[-1]
    for value in [str(c) for c in action.choices or ()] or CANDIDATES:
        try:
            parser.parse_args([*before, flag, value])
            return value
        except ConfigError:
            continue
    raise AssertionError(f"{parser.prog} {flag}: no value of {CANDIDATES} parses")


def required_args(parser: ArgumentParser) -> list[str]:
    """The arguments the parser cannot go without (--prompt, -o, a trace file)."""
    argv: list[str] = []
    for action in parser._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[0], "x.mltrace"]
    argv += ["x.mltrace" for action in parser._actions if not action.option_strings and action.nargs is None]
    return argv


def single_value_flags(parser: ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.nargs != 0
            and not isinstance(a, (argparse._AppendAction, argparse._HelpAction, argparse._SubParsersAction))]


@pytest.mark.parametrize("cli", list(CLIS))
def test_every_flag_given_twice_is_refused_naming_both(cli, monkeypatch):
    checked = 0
    for parser in parsers_of(CLIS[cli], monkeypatch):
        before = required_args(parser)
        for action in single_value_flags(parser):
            first, second = action.option_strings[0], action.option_strings[-1]  # -o, --output
            if action.required:  # `before` gives it once already, as `first`
                twice = [*before, second, "y.mltrace"]
            else:
                value = one_value(parser, before, action)
                twice = [*before, first, value, second, value]
            with pytest.raises(ConfigError, match="given twice") as info:
                parser.parse_args(twice)
            # Both occurrences named, each with its value as parsed ("3" for a float flag: 3.0).
            assert f"given twice ({first} " in str(info.value) and f" and {second} " in str(info.value)
            checked += 1
    assert checked >= 3  # every command line has a few


# Each would fail fast without the refusal too (a model or trace that is not there), never run.
@pytest.mark.parametrize("argv", [
    ["minillama", "--prompt", "hi", "--model", "/no/such/model", "--max-tokens", "1", "--max-tokens=50"],
    ["inspector", "record", "--prompt", "hi", "--model", "/no/such/model", "-o", "a.mltrace", "--output", "b.mltrace"],
    ["inspector", "show", "/no/such.mltrace", "--step", "0", "--step", "1"],
    ["app", "--trace", "/no/such.mltrace", "--trace", "/no/other.mltrace"],
])
def test_the_command_line_says_so_in_one_line_with_status_2(capsys, argv):
    cli, *args = argv
    assert CLIS[cli](args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "given twice" in err and "Traceback" not in err


def test_a_flag_meant_to_repeat_still_does():
    """--prompt appends; a store_true flag given twice sets the same value, nothing is lost."""
    args = minillama.__main__.build_parser().parse_args(["--prompt", "a", "--prompt", "b", "--chat", "--chat",
                                                         "--max-tokens", "2"])
    assert args.prompt == ["a", "b"] and args.chat and args.max_tokens == 2
    parser = minillama.__main__.build_parser()  # the parser, parsed twice, starts each parse afresh
    assert parser.parse_args(["--prompt", "a", "--seed", "1"]).seed == parser.parse_args(["--prompt", "a", "--seed", "1"]).seed
