"""Fork requests from the page ("what if it had picked the other token?"), checked whole.

Two ways to ask, both at a step where a sequence drew a token:
- a click on another token in the Next token tab: static/app.js sends {"seq", "step", "token"}
  (the button's data attributes) as JSON through a hidden field;
- text typed in the "Fork with text" box, at the cursor's step of the selected sequence.

Either becomes a ForkPlan: fork sequence `seq_id` keeping the `num_tokens` tokens it had before
that step's token, with `forced` instead. Everything from the browser is hostile until checked
here: the JSON's shape and types, that the sequence, the step and the tokens exist, that the
session runs a live engine; anything wrong raises ValueError or InvalidRequestError with a
message for the user, and nothing has changed. (The engine checks the fork again and refuses a
parent it no longer holds, e.g. one that was aborted.)

The fork "runs to the same max tokens": it ends where its parent may end, so its tokens kept
from the parent, its forced tokens and its new ones together are the parent's max_tokens (at
least one new token). Side by side in the Branch view, both columns then have the same length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from minillama import InvalidRequestError, SamplingParams
from webui.sessions import UISession

MAX_CLICK_CHARS = 200  # a click's JSON: three small numbers
CLICK_KEYS = {"seq", "step", "token"}


@dataclass(frozen=True)
class ForkPlan:
    seq_id: int  # the parent
    step: int  # the step whose token the fork replaces
    num_tokens: int  # the parent's tokens the fork keeps: those before that step's token
    forced: list[int]  # what it takes instead
    params: SamplingParams  # the parent's, with max_tokens so the fork ends where the parent may


def from_click(session: UISession, payload: object) -> ForkPlan:
    """The fork a click on token `token` of sequence `seq` at step `step` asks for."""
    seq_id, step, token_id = _parse_click(payload)
    return plan(session, seq_id, step, [token_id])


def from_text(session: UISession, seq_id: int | None, text: object, max_chars: int) -> ForkPlan:
    """The fork that forces typed `text` at the cursor's step of sequence `seq_id`."""
    _check_live(session)
    if seq_id is None:
        raise ValueError("no sequence at the cursor: add prompts and step first")
    if not isinstance(text, str) or not text:
        raise ValueError("the fork text is empty: type the text to put in place of the token at the cursor")
    if len(text) > max_chars:
        raise ValueError(f"the fork text has {len(text)} characters; the limit is {max_chars}")
    tokenizer = session.debug.engine.tokenizer
    if tokenizer is None:
        raise InvalidRequestError("this model has no tokenizer: fork by clicking a token instead")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the fork text is not valid text") from None
    # No special tokens (no BOS): the text goes on from the middle of the sequence.
    forced = list(tokenizer.encode(text, add_special_tokens=False))
    if not forced:
        raise ValueError(f"the fork text {text[:40]!r} encodes to no tokens")
    return plan(session, seq_id, session.index, forced)


def plan(session: UISession, seq_id: int, step: int, forced: list[int]) -> ForkPlan:
    """Check a fork of `seq_id` at step `step` forcing `forced`, against the session's trace
    and engine; the plan, or ValueError / InvalidRequestError saying what is wrong."""
    _check_live(session)
    trace = session.trace
    seq = trace.sequences.get(seq_id)
    if seq is None:
        raise ValueError(f"there is no sequence #{seq_id} in this session")
    if step not in seq.token_steps:
        # After a fork the picker shows the fork: name its parent, which may be the one meant.
        drew = [s for s in trace.sequences if step in trace.sequences[s].token_steps]
        hint = f", or pick #{seq.parent_id} in the Sequence picker" if seq.parent_id in drew else ""
        raise ValueError(f"#{seq_id} drew no token at step {step}: fork at a step where it drew one{hint}")
    vocab = trace.model.vocab_size
    bad = [t for t in forced if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token id {bad[0]} is not in the model's vocabulary (0..{vocab - 1})")
    out = seq.token_steps.index(step)
    if forced == [seq.output_ids[out]]:
        raise ValueError(f"#{seq_id} drew that very token at step {step}: pick another one")
    try:
        params = session.debug.engine.request(seq_id).params
    except KeyError:
        raise InvalidRequestError(f"#{seq_id} is no longer held by the engine (aborted): it cannot be forked") from None
    num_tokens = len(seq.prompt_ids) + out
    # The parent's budget counts from the end of its own prompt: the fork kept `out` of those
    # tokens and forces len(forced) more.
    remaining = max(params.max_tokens - out - len(forced), 1)
    # One plain sequence, drawn as its parent draws tokens: not a set of samples or a beam search,
    # even when the parent is one of those; a beam's fork goes on greedily, as deterministic as
    # the search (which ignores temperature).
    temperature = 0.0 if params.beam_width > 1 else params.temperature
    fork_params = SamplingParams(
        temperature=temperature, top_p=params.top_p, top_k=params.top_k, max_tokens=remaining,
        seed=params.seed, ignore_eos=params.ignore_eos, stop_token_ids=params.stop_token_ids,
    )
    return ForkPlan(seq_id, step, num_tokens, list(forced), fork_params)


def _parse_click(payload: object) -> tuple[int, int, int]:
    """{"seq": int, "step": int, "token": int} as JSON, nothing more, nothing less."""
    if not isinstance(payload, str) or not payload:
        raise ValueError("a fork click carries a sequence, a step and a token: this one carried none (reload the page)")
    if len(payload) > MAX_CLICK_CHARS:
        raise ValueError(f"a fork click carries three small numbers, not {len(payload)} characters")
    try:
        fields = json.loads(payload)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or set(fields) != CLICK_KEYS:
        raise ValueError("a fork click carries exactly a sequence, a step and a token (reload the page)")
    values = [fields[name] for name in ("seq", "step", "token")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError("a fork click's sequence, step and token are whole numbers >= 0")
    return values[0], values[1], values[2]


def _check_live(session: UISession) -> None:
    if session.opened is not None:
        raise ValueError(session.no_fork_reason)
    if session.debug is None or not session.trace.sequences:
        raise ValueError("nothing to fork yet: add prompts and step first")
