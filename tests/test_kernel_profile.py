"""The kernel profile's bookkeeping (benchmarks/kernel_profile.py) on a made-up GPU timeline:
where the prefill ends, and each phase's busy and idle time and kernel totals."""

from __future__ import annotations

from benchmarks.kernel_profile import gpu_events, phase_table, split_phases


def _event(name: str, ts: float, dur: float, cat: str = "kernel") -> dict:
    return {"name": name, "ts": ts, "dur": dur, "cat": cat, "ph": "X"}


TRACE = {"traceEvents": [
    _event("_decode_kernel", 300, 10),  # out of order on purpose: the reader sorts by start
    _event("gemm", 0, 50),
    _event("_prefill_kernel", 60, 20),
    _event("gemm", 100, 50),
    _event("Memcpy HtoD", 150, 5, cat="gpu_memcpy"),
    _event("gemm", 320, 30),
    _event("aten::mm", 0, 400, cat="cpu_op"),  # the host's ops are not the GPU's time
    {"name": "a flow arrow", "ph": "s", "cat": "kernel", "ts": 10},  # not a span
]}


def test_the_timeline_splits_at_the_first_decode_kernel():
    events = gpu_events(TRACE)
    assert [e["ts"] for e in events] == [0, 60, 100, 150, 300, 320]
    prefill, decode = split_phases(events)
    assert [e["name"] for e in prefill] == ["gemm", "_prefill_kernel", "gemm", "Memcpy HtoD"]
    assert [e["name"] for e in decode] == ["_decode_kernel", "gemm"]


def test_phase_table_counts_busy_idle_and_kernels():
    prefill, decode = split_phases(gpu_events(TRACE))
    lines = phase_table(prefill, "prefill", top=2)
    # span 0..155 us, busy 50 + 20 + 50 + 5 = 125 us, idle 30 us
    assert lines[0] == "prefill: span 0.2 ms, GPU busy 0.1 ms, idle 0.0 ms (19%)"
    assert len(lines) == 3 and "gemm" in lines[1] and "2x" in lines[1] and "_prefill_kernel" in lines[2]
    assert phase_table(decode, "decode", top=5)[0].endswith("(20%)")  # 10 of its 50 us idle


def test_no_decode_kernel_leaves_one_phase():
    events = [e for e in gpu_events(TRACE) if e["name"] != "_decode_kernel"]
    prefill, decode = split_phases(events)
    assert len(prefill) == len(events) and decode == []
    assert phase_table([], "decode", top=3) == ["decode: no GPU work"]


def test_the_tma_decode_kernel_marks_the_split_too():
    """On Hopper the decode attention is `_decode_tma_kernel`: the split must find it as well."""
    renamed = {"traceEvents": [dict(e, name="_decode_tma_kernel") if e.get("name") == "_decode_kernel" else e
                               for e in TRACE["traceEvents"]]}
    prefill, decode = split_phases(gpu_events(renamed))
    assert [e["name"] for e in decode] == ["_decode_tma_kernel", "gemm"] and len(prefill) == 4
