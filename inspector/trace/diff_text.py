"""A TraceDiff as text: what `python -m inspector diff` prints. Columns read "a / b"."""

from __future__ import annotations

from inspector.trace.arguments import flag, instance
from inspector.trace.diff import RequestDiff, RunTimings, Schedule, TokenDelta, TopToken, TraceDiff
from inspector.trace.export_text import piece, terminal_safe

MAX_CAUSES = 12  # causes printed per request and side, where the schedules differ


def format_diff(diff: TraceDiff, tokens: bool = False) -> str:
    """The comparison: weights and settings, each request (equal or where it diverged, with the
    top-k on both sides), the schedules where they differ, the timings. tokens: the per-position
    table (delta log p, delta entropy, drawn token's probability) for every request, not only
    the divergent ones."""
    instance(diff, TraceDiff, "diff")
    flag(tokens, "tokens")
    same = {True: "the same (fingerprints match)", False: "DIFFERENT (fingerprints differ)",
            None: "not compared (a trace has no fingerprint)"}[diff.same_weights]
    lines = [f"weights: {same}", *(f"note: {n}" for n in diff.notes)]
    if diff.settings:
        lines.append("settings: " + "; ".join(f"{name} {a} -> {b}" for name, a, b in diff.settings))
    else:
        lines.append("settings: the same")
    differing = [r for r in diff.requests if not r.equal]
    lines.append(f"requests: {len(diff.requests) - len(differing)} equal, {len(differing)} different")
    for r in diff.requests:
        lines += _request(r, tokens)
    rows = [r for r in diff.requests if r.schedule_differs]
    lines.append("schedules (a / b), where they differ:" if rows else "schedules: the same for every request")
    for r in rows:
        lines.append(f"  {r.label}: {_schedules(r.schedule_a, r.schedule_b)}{_moved(r)}")
        for side, schedule in (("a", r.schedule_a), ("b", r.schedule_b)):
            causes = schedule.causes if schedule is not None else []
            lines += [f"      why in {side}: {cause}" for cause in causes[:MAX_CAUSES]]
            if len(causes) > MAX_CAUSES:
                lines.append(f"      why in {side}: ... and {len(causes) - MAX_CAUSES} more")
    lines.append(f"timings (a / b): {_timings(diff.timings_a, diff.timings_b)}")
    latencies = [r for r in diff.requests if r.schedule_a and r.schedule_b]
    lines += [f"  {r.label}: latency {_ms(r.schedule_a.latency_ms)} / {_ms(r.schedule_b.latency_ms)}" for r in latencies]
    return terminal_safe("\n".join(lines))


def _request(r: RequestDiff, tokens: bool) -> list[str]:
    ids = f"#{_id(r.seq_a)} / #{_id(r.seq_b)}"
    if r.seq_a is None or r.seq_b is None:
        return [f"  {r.label} ({ids}): only in {'b' if r.seq_a is None else 'a'}, {_clip(r.prompt_text)!r}"]
    if not r.same_prompt:
        return [f"  {r.label} ({ids}): NOT THE SAME REQUEST: the prompts differ ({_clip(r.prompt_text)!r} in a)"]
    worst = r.max_abs_delta_logp
    drift = f", max |delta log p| {worst:.2e}" if worst is not None else ""
    if r.divergence is None:
        lines = [f"  {r.label} ({ids}): equal, {len(r.tokens_a)} tokens{drift}"]
    else:
        d = r.divergence
        lines = [
            f"  {r.label} ({ids}): DIFFERENT from token {d.position} (step {_id(d.step_a)} / step {_id(d.step_b)}): "
            f"{_token(d.token_a, d.text_a)} / {_token(d.token_b, d.text_b)}; {len(r.tokens_a)} / {len(r.tokens_b)} "
            f"tokens, {r.finish_a} / {r.finish_b}{drift}",
            f"      top a: {_top(d.top_a)}",
            f"      top b: {_top(d.top_b)}",
        ]
    if tokens or r.divergence is not None:
        lines.append("      token  steps      max|dlogp|  d entropy  p(drawn) a / b")
        lines += [f"      {_delta(d)}" for d in r.deltas]
    return lines


def _delta(d: TokenDelta) -> str:
    logp = f"{d.max_abs_delta_logp:.2e}" if d.max_abs_delta_logp is not None else "-"
    entropy = f"{d.delta_entropy:+.2e}" if d.delta_entropy is not None else "-"
    probs = f"{_p(d.sampled_prob_a)} / {_p(d.sampled_prob_b)}"
    return f"{d.position:5d}  {d.step_a:4d}/{d.step_b:<4d}  {logp:>10}  {entropy:>9}  {probs}"


def _schedules(a: Schedule | None, b: Schedule | None) -> str:
    if a is None or b is None:
        return "only in one run"
    return (f"waited {a.waiting_steps} / {b.waiting_steps} steps, prefill chunks {a.prefill_chunks} / "
            f"{b.prefill_chunks}, preemptions {a.preemptions} / {b.preemptions}, prefix-cache tokens "
            f"{a.cached_tokens} / {b.cached_tokens}, steps {_id(a.first_step)}-{_id(a.last_step)} / "
            f"{_id(b.first_step)}-{_id(b.last_step)}")


def _moved(r: RequestDiff) -> str:
    """Where the request's tokens start coming at other steps, when they do."""
    i = r.first_moved_token
    if i is None or r.schedule_a is None or r.schedule_b is None:
        return ""
    return f", token {i} first at another step ({r.schedule_a.token_steps[i]} / {r.schedule_b.token_steps[i]})"


def _timings(a: RunTimings, b: RunTimings) -> str:
    return (f"{a.steps} / {b.steps} steps ({a.prefill_steps} / {b.prefill_steps} prefill), {a.preemptions} / "
            f"{b.preemptions} preemptions, wall {a.wall_ms:.1f} / {b.wall_ms:.1f} ms, forward {a.forward_ms:.1f} / "
            f"{b.forward_ms:.1f} ms, mean step {a.mean_step_ms:.2f} / {b.mean_step_ms:.2f} ms")


def _top(top: list[TopToken]) -> str:
    return " | ".join(f"{piece(t.text, t.token_id)} {t.prob:.3f}" for t in top) if top else "(logits not recorded)"


def _token(token_id: int | None, text: str | None) -> str:
    return "(ended)" if token_id is None else f"{text!r} (id {token_id})"


def _id(value: int | None) -> str:
    return "-" if value is None else str(value)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
