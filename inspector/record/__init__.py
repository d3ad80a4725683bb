"""record: the engine observer that writes every step into a Trace.

recorder.py (the Recorder and its CapturePolicy: what each hook keeps), attention_capture.py
(the traced sequences' queries and keys), lens_capture.py (the logit lens), kv_snapshot.py (the
block pool at each step's end), logits_summary.py and logits_kernel.py (top-k, entropy and the
drawn token's rank, on the device), graphed.py (CUDA graphs for that summary), budget.py (what
to stop keeping when memory runs short), token_texts.py (token ids to display text, cached).
"""

from inspector.record.recorder import CapturePolicy, Recorder

__all__ = ["CapturePolicy", "Recorder"]
