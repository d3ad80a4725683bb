"""The README's flag tables (English and Chinese) tell the truth about the command lines: each
table lists every flag of its command, and each default it states is the parser's.

A table row is `| flags | default | meaning |`. A default in backticks is a value, compared with
the parser's; a default in words ("off", "none", "from memory", "关") says the flag is a switch
that is not given, or that nothing is set (the parser's default is None).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import minillama.__main__
import webui.cli

ROOT = Path(__file__).resolve().parent.parent
READMES = ["README.md", "README.zh-CN.md"]
# The heading above each table names the command, as `python -m minillama --help` does.
PARSERS = {"python -m minillama --help": minillama.__main__.build_parser, "python app.py --help": webui.cli.build_parser}


def flag_table(readme: str, command: str) -> list[tuple[list[str], str]]:
    """(the flags, the default cell) of each row of the table under the heading naming `command`."""
    lines = (ROOT / readme).read_text().splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("#") and f"`{command}`" in line)
    table = []
    for line in lines[heading + 1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif table:  # the first line after the table
            break
    header, rule, *rows = table
    assert len(header) == 3 and set(rule) == {"---"}, f"{readme}: the table under {command!r} is not flag | default | meaning"
    return [(re.findall(r"`(--[a-z-]+)", row[0]), row[1]) for row in rows]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"}


def is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0  # store_true / store_false: given or not


@pytest.mark.parametrize("readme", READMES)
@pytest.mark.parametrize("command", PARSERS)
def test_the_readme_lists_every_flag_with_its_default(readme, command):
    parser_options = options(PARSERS[command]())
    rows = flag_table(readme, command)
    listed = [flag for flags, _ in rows for flag in flags]
    assert sorted(listed) == sorted(parser_options), f"{readme}: the flags of {command!r}"
    for flags, default in rows:
        for flag in flags:
            action = parser_options[flag]
            value = re.fullmatch(r"`([^`]*)`", default)
            if value is None:  # in words: a switch left off, or nothing set
                assert is_switch(action) or action.default is None, f"{readme}: {flag} defaults to {action.default!r}"
            else:
                assert not is_switch(action), f"{readme}: {flag} is a switch; its default is 'off'"
                assert same(value.group(1), action.default), f"{readme}: {flag} says {default}, the parser {action.default!r}"


def same(text: str, default: object) -> bool:
    """Does the README's `text` state `default`? Numbers are compared as numbers (20 is 20.0)."""
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return float(text) == default
    return text == str(default)


def test_a_switch_flips_its_fields_default():
    """--no-prefix-caching, --eager, --no-fused-ops: given, each sets its EngineConfig field to the
    opposite of the field's default (which the switch starts from)."""
    parser = minillama.__main__.build_parser()
    switches = [a for a in options(parser).values() if is_switch(a) and a.dest in ("enable_prefix_caching", "enforce_eager",
                                                                                    "fused_ops")]
    assert len(switches) == 3
    for action in switches:
        given = parser.parse_args(["--prompt", "hi", action.option_strings[0]])
        assert getattr(given, action.dest) is not action.default
