"""The Compare tab: the session's run beside another run of the same requests, and where they part.

Four questions, one click each:
- Batch invariance ("does a request say the same alone as in the batch?"): every request of
  the session is replayed alone (inspector.replay(alone=True)) on the server's model, and the
  two runs are diffed. Batched kernels may reduce in another order for another batch, so a
  near tie can flip; the diff shows where, and how close the tie was.
- Fidelity ("how far do the fast kernels and the dtype move the logits?"): the session is
  replayed on the float32 copy of the model that computes with the readable reference ops
  (LLMEngine.reference_copy; made on the first fidelity check, then kept by the server).
- Another setting ("what if the pool were smaller?"): the session is replayed under the Engine
  panel's settings (KV blocks, block size, batch limits, prefix caching): the schedules and
  their causes side by side, and whether any token moved.
- A trace file of the same requests (another setting, another day, another machine), uploaded.

The session's trace is side a, the other run side b (inspector.diff_traces). The replays run
under the server's limits: every step under the model lock (other users' steps go in between),
at most Limits.max_steps steps, the recorder within its memory budget, the recorded settings
within what a session may set (a trace from a file says what it likes). Anything refused says
why, and nothing changes: the session and its trace are only read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inspector import CapturePolicy, Trace, TraceDiff, diff_traces, replay
from inspector.debug import lineage_roots, recorded_top_k
from inspector.views import compare_figure, compare_html
from minillama import LLMEngine
from webui.render import figures_html
from webui.request_limits import Ask, check_requests
from webui.sessions import MAX_BATCHED_TOKENS, MAX_NUM_SEQS, EngineSettings, LimitReached, SessionManager, UISession

Progress = Callable[[int, int], None]  # (steps done, steps expected)
MAX_TOP_K = 50
MAX_REQUESTS = 256  # requests a replay takes (a session makes a few dozen; a file may claim thousands)


@dataclass(frozen=True)
class Comparison:
    diff: TraceDiff
    title_a: str
    title_b: str
    against: str  # what the session was compared with, in a few words, for the status line


def alone(manager: SessionManager, session: UISession, on_step: Progress) -> Comparison:
    """The session's requests, each replayed alone on the server's model, against the batch."""
    trace = comparable(session)
    engine = _model(manager)
    replayed = _replay(manager, trace, engine, on_step, alone=True)
    return Comparison(diff_traces(trace, replayed), _title(session, trace, "in one batch"),
                      f"the same {_requests(trace)}, each replayed alone ({len(replayed.steps)} steps)",
                      "each request alone")


def fidelity(manager: SessionManager, session: UISession, on_step: Progress) -> Comparison:
    """The session against a replay in float32 with the reference kernels."""
    trace = comparable(session)
    reference = manager.reference_engine()
    replayed = _replay(manager, trace, reference, on_step, enforce_eager=True)
    return Comparison(diff_traces(trace, replayed), _title(session, trace, _numerics(trace)),
                      f"the same {_requests(trace)} replayed in float32 with the reference kernels "
                      f"({len(replayed.steps)} steps)", "float32 and the reference kernels")


def with_settings(manager: SessionManager, session: UISession, settings: EngineSettings,
                  on_step: Progress) -> Comparison:
    """The session against a replay under other engine settings (the Engine panel's): a smaller
    pool preempts, a smaller token budget chunks, prefix caching off recomputes."""
    trace = comparable(session)
    manager.check_engine_settings(settings)
    replayed = _replay(manager, trace, _model(manager), on_step, num_kv_blocks=settings.num_kv_blocks,
                       block_size=settings.block_size, max_num_seqs=settings.max_num_seqs,
                       max_num_batched_tokens=settings.max_num_batched_tokens,
                       enable_prefix_caching=settings.prefix_caching)
    e = replayed.engine
    how = (f"{e.num_blocks} KV blocks of {e.block_size} tokens, batches of up to {e.max_num_seqs}, "
           f"{e.max_num_batched_tokens} batched tokens, prefix caching {'on' if e.prefix_caching else 'off'}")
    return Comparison(diff_traces(trace, replayed), _title(session, trace, _settings(trace)),
                      f"the same {_requests(trace)} replayed with {how} ({len(replayed.steps)} steps)",
                      "the Engine panel's settings")


def against(session: UISession, other: Trace, name: str) -> Comparison:
    """The session against a trace file (`other`, already loaded and validated)."""
    trace = comparable(session)
    return Comparison(diff_traces(trace, other), _title(session, trace, _numerics(trace)),
                      f"{name} ({len(other.sequences)} request(s), {len(other.steps)} steps)", name)


def comparable(session: UISession) -> Trace:
    """The session's trace, if it can be compared: it has steps, and every request finished
    (a request cut short would differ from its replay only by being cut short)."""
    trace = session.trace
    if trace is None or not trace.steps or not trace.sequences:
        raise ValueError("nothing to compare yet: add prompts and Run first")
    if session.running:
        raise ValueError("a run is in progress: Pause it (or let it end) first, then compare")
    unfinished = [seq_id for seq_id, seq in trace.sequences.items() if seq.finish_reason is None]
    if unfinished:
        raise ValueError(f"{len(unfinished)} request(s) have not finished (#{unfinished[0]} first): "
                         "Run to the end first, then compare")
    return trace


def panel(comparison: Comparison | None) -> str:
    """The tab's panel: the comparison, with its chart under the requests (a plot div and its
    figure's carrier, drawn by static/app.js like every other figure)."""
    if comparison is None:  # plain text: no stylesheet in the page until there is a comparison to show
        return ("<p class='ml-empty'>Compare this session with a replay of it (each request alone, in float32 with "
                "the reference kernels, or under the Engine panel's settings) or with a trace file of the same "
                "requests.</p>")
    chart = f"<div id='ml-plot-compare' class='ml-plot'></div>{figures_html({'compare': compare_figure(comparison.diff)})}"
    return compare_html(comparison.diff, comparison.title_a, comparison.title_b, chart)


def verdict(comparison: Comparison) -> str:
    """One line for the status banner."""
    requests = comparison.diff.requests
    differing = [r for r in requests if not r.equal]
    compared = f"compared with {comparison.against}"  # two comparisons that agree read apart
    if not differing:
        return f"{compared}: all {len(requests)} request(s) give the same tokens (the Compare tab has the details)"
    return f"{compared}: {len(differing)} of {len(requests)} request(s) differ, first {differing[0].label} (Compare tab)"


def _model(manager: SessionManager) -> LLMEngine:
    if manager.base is None:
        raise LimitReached("this server runs no model (--trace): compare with a trace file instead")
    return manager.base


def _replay(manager: SessionManager, trace: Trace, engine: LLMEngine, on_step: Progress, alone: bool = False,
            **overrides: object) -> Trace:
    """Replay `trace` on an engine over `engine`'s model, within the server's limits."""
    limits, e = manager.limits, trace.engine
    if "num_kv_blocks" not in overrides and e.num_blocks > limits.max_kv_blocks:
        raise LimitReached(f"the trace ran with {e.num_blocks} KV blocks; this server replays at most "
                           f"{limits.max_kv_blocks} (--max-kv-blocks)")
    if "max_num_seqs" not in overrides and e.max_num_seqs > MAX_NUM_SEQS:
        raise LimitReached(f"the trace ran batches of up to {e.max_num_seqs}; this server replays at most {MAX_NUM_SEQS}")
    if "max_num_batched_tokens" not in overrides and e.max_num_batched_tokens > MAX_BATCHED_TOKENS:
        raise LimitReached(f"the trace ran prefill steps of up to {e.max_num_batched_tokens} tokens; this server "
                           f"replays at most {MAX_BATCHED_TOKENS}")
    # The pool is sized by the recorded block size too, which a file may set to 65,536: a
    # replay's pool takes no more memory than a session's may (on the replaying engine's model,
    # which for the fidelity check is the float32 copy).
    manager.check_kv_memory(engine, int(overrides.get("num_kv_blocks", e.num_blocks)),
                            int(overrides.get("block_size", e.block_size)))
    requests = sum(seq.parent_id is None for seq in trace.sequences.values())
    if requests > MAX_REQUESTS:
        raise LimitReached(f"the trace has {requests} requests; this server replays at most {MAX_REQUESTS}")
    _check_requests(manager, trace)
    policy = CapturePolicy(attention=False, top_k=min(recorded_top_k(trace), MAX_TOP_K),
                           memory_budget=int(limits.trace_budget_mb * 2**20))
    estimate = _steps_expected(trace) if alone else len(trace.steps)
    return replay(trace, engine=engine, alone=alone, policy=policy, progress=False, step_lock=manager.model_lock,
                  max_steps=limits.max_steps, on_step=lambda done, _: on_step(done, max(estimate, done)), **overrides)


def _check_requests(manager: SessionManager, trace: Trace) -> None:
    """Raise LimitReached when the replay would make what a session may not ask for (Add
    prompts, a fork: webui/request_limits.py): a file's request may say n = 1,000, and each
    sequence a replay makes is kept, and drawn, like a session's. Each request is checked (its
    samples and beams come with it) and each fork a user made counts one sequence more."""
    requests = [seq for seq in trace.sequences.values() if seq.parent_id is None]
    forks = sum(seq.parent_id is not None and seq.fork_cause == "user" for seq in trace.sequences.values())
    asks = [Ask(f"request #{seq.seq_id} of the trace", seq.params["max_tokens"], seq.params.get("n", 1),
                seq.params.get("beam_width", 1)) for seq in requests]
    check_requests(manager.limits, asks, forks=forks, advice=" (a replay makes every sequence of the trace again)")


def _steps_expected(trace: Trace) -> int:
    """About how many steps the requests take one after another: the sum of each lineage's span
    (a request and its forks, from its arrival to its last token)."""
    roots = lineage_roots(trace)
    ends: dict[int, int] = {}  # a request -> the last step of its lineage
    for seq_id, seq in trace.sequences.items():
        end = seq.token_steps[-1] if seq.token_steps else seq.added_step
        ends[roots[seq_id]] = max(ends.get(roots[seq_id], end), end)
    spans = (end - trace.sequences[root].added_step + 1 for root, end in ends.items() if root in trace.sequences)
    return max(sum(spans), 1)


def _title(session: UISession, trace: Trace, how: str) -> str:
    if session.shared_view:
        source = f"the shared view of {session.opened_name}"
    else:
        source = f"the trace file {session.opened_name}" if session.opened is not None else "this session"
    return f"{source}: {_requests(trace)} {how} ({len(trace.steps)} steps)"


def _requests(trace: Trace) -> str:
    roots = sum(seq.parent_id is None for seq in trace.sequences.values())
    return f"{roots} request(s)"


def _settings(trace: Trace) -> str:
    e = trace.engine
    return f"with {e.num_blocks} KV blocks of {e.block_size} tokens"


def _numerics(trace: Trace) -> str:
    return f"in {trace.model.dtype} with attention {trace.engine.attention}"
