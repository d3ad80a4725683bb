"""Values an API client sends that the page's own fields would never send are refused in one line.

The page sends each event's values from its fields: a string from a textbox, a number from a
slider, one of a dropdown's choices. A script calling /gradio_api/call/<name> (or /run/<name>)
may send anything: a string for a slider, too few values, a path for a file. Gradio then raised
from its own checks (Blocks.preprocess_data): the server logged a 20-40 line traceback for each
such call, and with show_error off the caller got `{"error": null}`, no reason at all.

`refuse_malformed_values` wraps the app's preprocess_data, the one place every event's values
pass before a handler runs, queued or not: any failure there becomes a gr.Error naming the call,
the field and what it got (short, escaped), which Gradio sends to the caller and logs without a
traceback. Where Gradio's own checks take what the page never sends (any JSON in a textbox,
"false" in a checkbox), the value's type is checked first (_PAGE_SENDS). Nothing reaches the
handler, so no session changes. A queued call's caller gets it as
its event's error; a direct call's as a 400 (the front door's doing: Gradio answers 500).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from inspector.views import escape
from minillama.cli import printable_line

MAX_SHOWN = 60  # characters of a refused value quoted back
# The title of a refusal's gr.Error. Gradio answers a failed direct call (/gradio_api/run/<name>)
# with status 500 whatever failed; the front door turns those with this title into 400, since
# the fault is the caller's (webui/front_door.py).
REFUSED_TITLE = "Refused"


def refuse_malformed_values(app: gr.Blocks) -> None:
    """Make `app` refuse values its fields do not take with a message (see the module doc)."""
    original = app.preprocess_data

    async def preprocess_data(block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False) -> list[Any]:
        expected = len(block_fn.inputs)
        if len(inputs) != expected:
            raise _refusal(block_fn, f"it takes {expected} value(s), got {len(inputs)}")
        for index, (block, value) in enumerate(zip(block_fn.inputs, inputs, strict=True)):
            label = getattr(block, "label", None) or type(block).__name__.lower()
            if getattr(block, "data_model", None) is not None and not _uploaded_files(value):
                raise _refusal(block_fn, f"value {index + 1} ({label}) is not a file uploaded to this server")
            if _holds_non_finite(value):
                raise _refusal(block_fn, f"value {index + 1} ({label}) holds a number that is not finite (NaN or infinity)")
            sent = _what_the_page_sends(block)
            if sent is not None and not _is_a(value, sent[0]):
                raise _refusal(block_fn, f"value {index + 1} ({label}) cannot be {_short(value)}: it takes {sent[1]}")
        try:
            return await original(block_fn, inputs, state, explicit_call)
        except Exception as error:  # noqa: BLE001 - every failure here is the caller's values
            raise _refusal(block_fn, _what_was_wrong(block_fn, inputs, state, error)) from None

    app.preprocess_data = preprocess_data  # type: ignore[method-assign]


# The JSON types each kind of field takes, and how to say so. Gradio's own checks take more: a
# Textbox made a list or an object into its text (str()), so ["Hi"] was added as the prompt
# "['Hi']"; a Checkbox passed anything on, and "false" read as true (prefix caching on); a
# Number rounded true to 1. (Dropdowns and checkbox groups check their choices, files are
# checked below.) A number in a text box is its digits, as typed; None is a value left empty,
# which the handlers take as such.
_PAGE_SENDS: tuple[tuple[type, tuple[type, ...], str], ...] = (
    (gr.Checkbox, (bool,), "true or false"),
    (gr.Textbox, (str, int, float, type(None)), "a string"),
    (gr.Number, (int, float, type(None)), "a number"),
    (gr.Slider, (int, float), "a number"),
)


def _what_the_page_sends(block: Any) -> tuple[tuple[type, ...], str] | None:
    """(the JSON types, in words) that field `block` takes, or None when Gradio checks it itself."""
    for kind, types, words in _PAGE_SENDS:
        if isinstance(block, kind):
            return types, words
    return None


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is no number (JSON's true is no 1)."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _uploaded_files(value: Any) -> bool:
    """Does a file field's value name only files the upload route put in Gradio's upload folder
    (or no file)? Gradio takes any path it is handed: a URL it would fetch from the server, a
    folder of its own cache that it then tried to delete as a file (its cache sweeper died on
    it, and uploads piled up), a path that told the caller the server's working folder."""
    if value is None:
        return True
    files = value if isinstance(value, list) else [value]
    folder = os.path.realpath(get_upload_folder())
    for file in files:
        path = file.get("path") if isinstance(file, dict) else None
        if not isinstance(path, str) or "\0" in path:
            return False
        real = os.path.realpath(path)
        if os.path.commonpath([real, folder]) != folder or real == folder or not os.path.isfile(real):
            return False
    return True


def _holds_non_finite(value: Any) -> bool:
    """Is there a NaN or an infinity in `value`, or in the lists and objects it holds? A page
    never sends one (JSON has none; the server's parser takes NaN and Infinity anyway), and
    NaN passes every range check a field makes (NaN < 0 and NaN > 4 are both False), so a
    slider's handler met it in int(). Walked with a stack: JSON may nest thousands deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _refusal(block_fn: Any, reason: str) -> gr.Error:
    # Printable, in the log and in the answer alike, since it quotes what the caller sent (Gradio's
    # own refusal of a dropdown's value quotes it raw): an ESC would drive the server's terminal,
    # an RTL mark turn the toast's words around, and a lone surrogate failed the direct call's
    # JSON answer (UTF-8 has no such character), which went out as a 400 naming a
    # UnicodeEncodeError instead of the refusal.
    message = printable_line(f"the call to /{block_fn.api_name or block_fn.name} was refused: {reason}")
    print(f"minillama: {message}", file=sys.stderr)  # one line in the server's log, no traceback
    return gr.Error(escape(message), title=REFUSED_TITLE, print_exception=False)  # shown as HTML


def _what_was_wrong(block_fn: Any, inputs: list[Any], state: Any, error: Exception) -> str:
    """Which value a field refused, found by offering each to its field again (only on this
    error path, and only the checks that touch no file), else the error's first line. A field
    as this session last updated it (a dropdown's current choices) lives in `state`."""
    for index, (block, value) in enumerate(zip(block_fn.inputs, inputs, strict=True)):
        if state is not None and block._id in state:
            block = state[block._id]
        refused = _refusal_by(block, value)
        if refused is not None:
            label = getattr(block, "label", None) or type(block).__name__.lower()
            # Gradio's own refusals (gr.Error: "Value 9 is greater than maximum value 4.") are
            # written for users; other errors ("'<' not supported ...") would only confuse.
            why = f": {_short_text(refused.message)}" if isinstance(refused, gr.Error) else ""
            return f"value {index + 1} ({label}) cannot be {_short(value)}{why}"
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return _short_text(first_line)


def _refusal_by(block: Any, value: Any) -> Exception | None:
    """The error `block` raises taking `value`, or None if it takes it."""
    try:
        model = getattr(block, "data_model", None)
        if model is not None:  # a file: its description must be one; the file itself is Gradio's to check
            if value is not None:
                model.model_validate(value, context={"validate_meta": True})  # as Gradio checks it
        else:
            block.preprocess(value)
    except Exception as error:  # noqa: BLE001 - any refusal counts
        return error
    return None


def _short(value: Any) -> str:
    return f"{type(value).__name__} {_short_text(repr(value))}"


def _short_text(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"
