"""A number typed into a form's text field, read as the field shows it.

float() alone takes more than a person types as a number: other scripts' digits ("٣" is 3,
"１２" is 12), underscores ("1_000"), "inf", "nan" and "infinity". A field holding any of those
held a value it did not show, so the form reads only ASCII digits with an optional sign, point
and exponent; anything else is no number."""

from __future__ import annotations

import re

PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def typed_number(text: str) -> float | None:
    """`text` (surrounding spaces aside) as a float, or None when it is not a plain number. A
    "-0" is 0 (shown back as "0", not "-0"). A number too large for a float is inf, for the
    caller's range check to refuse."""
    text = text.strip()
    if not PLAIN_NUMBER.fullmatch(text):
        return None
    return float(text) + 0.0
