"""Every command line, given bad input, prints exactly one line naming the problem on stderr and
exits with status 2, never with a traceback (minillama/cli/errors.py): `python -m minillama`,
`python -m inspector`, `python app.py`, `python -m benchmarks.engine`.

The table runs each `main(argv)` in-process (fast); a few real subprocesses prove that nothing
else reaches stderr. The model, where one is needed, is a tiny random directory.
"""

from __future__ import annotations

import errno
import io
import json
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_model import write_tiny_model
from webui_support import free_port

import app
import benchmarks.engine
import benchmarks.recording
import benchmarks.sharing
import benchmarks.webui
import inspector.__main__
import minillama.__main__
from minillama.engine import llm_engine

ROOT = Path(__file__).resolve().parent.parent
CLIS = {"minillama": minillama.__main__.main, "inspector": inspector.__main__.main, "app": app.main,
        "bench-ui": benchmarks.webui.main, "recording": benchmarks.recording.main,
        "bench": benchmarks.engine.main, "sharing": benchmarks.sharing.main}
BAD_BYTES = "\udcff\udcfe caf\udce9"  # what Python makes of the argv bytes b"\xff\xfe caf\xe9"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """{name}s the argv templates below refer to."""
    root = tmp_path_factory.mktemp("cli")
    tiny = write_tiny_model(root / "tiny")
    bare = write_tiny_model(root / "bare", tokenizer=False)
    other = write_tiny_model(root / "other", seed=1)  # the same shape, other weights
    (root / "file.txt").write_text("not a model")
    (root / "junk.mltrace").write_text("not a trace")
    (root / "empty").mkdir()
    os.mkfifo(root / "pipe")  # nobody reads it: a writer that opened it would wait for ever
    hostile = _hostile_model_dirs(root, tiny)
    trace = root / "run.mltrace"
    code = inspector.__main__.main(["record", "--model", str(tiny), "--device", "cpu", "--prompt", "hi",
                                    "--max-tokens", "3", "--num-kv-blocks", "16", "--block-size", "4", "-o", str(trace)])
    assert code == 0
    short = root / "short.mltrace"  # two steps
    code = inspector.__main__.main(["record", "--model", str(tiny), "--device", "cpu", "--prompt", "hi",
                                    "--max-tokens", "2", "--num-kv-blocks", "16", "--block-size", "4", "-o", str(short)])
    assert code == 0
    (root / "link.mltrace").symlink_to(trace)  # the trace under another name
    # A field only transformers reads, of the wrong type (the benchmarks' HF peer is built from it).
    (root / "hf-field.json").write_text(json.dumps({**json.loads((tiny / "config.json").read_text()), "use_cache": "x"}))
    port = str(free_port())  # free now, and out of the kernel's own picks (app.py checks it first)
    return {"port": port, "short": str(short), "tiny": str(tiny), "link": str(root / "link.mltrace"), "bare": str(bare), "other": str(other), "file": str(root / "file.txt"), "hf-field": str(root / "hf-field.json"), "junk": str(root / "junk.mltrace"),
            "empty": str(root / "empty"), "trace": str(trace), "root": str(root), "pipe": str(root / "pipe"),
            **hostile}


def _hostile_model_dirs(root: Path, tiny: Path) -> dict[str, str]:
    """Copies of the tiny model, each with one file made hostile: a pipe or /dev/zero where a
    file is read (a read would block or fill memory), a config.json of a billion layers (the
    modules alone would take hours to make), token ids outside the vocabulary, a chat template
    that does not compile, one that loops for hours."""
    made = {}

    def copy(name: str) -> Path:
        target = root / name
        shutil.copytree(tiny, target)
        made[name] = str(target)
        return target

    for name, member in [("config-pipe", "config.json"), ("weights-pipe", "model.safetensors"),
                         ("tokenizer-pipe", "tokenizer.json")]:
        target = copy(name) / member
        target.unlink()
        os.mkfifo(target)
    config = copy("config-zero") / "config.json"
    config.unlink()
    config.symlink_to("/dev/zero")
    for name, edit in [("layers-huge", {"num_hidden_layers": 10**9}), ("bos-huge", {"bos_token_id": 10**9}),
                       ("eos-huge", {"eos_token_id": [2, 10**9]})]:
        config = copy(name) / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **edit}))
    (copy("chat-broken") / "chat_template.jinja").write_text("{% if %}")
    (copy("chat-loops") / "chat_template.jinja").write_text(
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}")
    return made


TINY = ["--model", "{tiny}", "--device", "cpu"]
RUN = ["--prompt", "hi", *TINY]
RECORD = ["record", "--prompt", "hi", "-o", "{root}/r.mltrace"]
REPLAY = ["replay", "{trace}", "--model", "{tiny}", "-o", "{root}/b.mltrace"]
REPLAY_JUNK = ["replay", "{junk}", "-o", "{root}/b.mltrace"]

# (cli, argv, a fragment of the one line)
BAD = {
    # python -m minillama: flags
    "no-prompt": ("minillama", [], "the following arguments are required: --prompt"),
    "unknown-flag": ("minillama", ["--prompt", "hi", "--bogus"], "unrecognized arguments: --bogus"),
    "int-flag-text": ("minillama", ["--prompt", "hi", "--max-tokens", "many"], "invalid int value: 'many'"),
    "device-banana": ("minillama", ["--prompt", "hi", "--device", "banana"], "unknown device (--device) 'banana'"),
    "device-mps": ("minillama", ["--prompt", "hi", "--device", "mps"], "choose auto, cpu, cuda or cuda:N"),
    "async-scheduling-maybe": ("minillama", ["--prompt", "hi", "--async-scheduling", "maybe"],
                               "argument --async-scheduling: invalid choice: 'maybe'"),
    "dtype": ("minillama", ["--prompt", "hi", "--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
    "attention": ("minillama", ["--prompt", "hi", "--attention", "flash"], "argument --attention: invalid choice"),
    "block-size-0": ("minillama", ["--prompt", "hi", "--block-size", "0"], "block_size (--block-size) must be"),
    "kv-blocks-negative": ("minillama", ["--prompt", "hi", "--num-kv-blocks", "-1"], "num_kv_blocks (--num-kv-blocks)"),
    "max-num-seqs-0": ("minillama", ["--prompt", "hi", "--max-num-seqs", "0"], "max_num_seqs (--max-num-seqs)"),
    "batched-tokens-0": ("minillama", ["--prompt", "hi", "--max-num-batched-tokens", "0"], "--max-num-batched-tokens"),
    "max-model-len-0": ("minillama", ["--prompt", "hi", "--max-model-len", "0"], "max_model_len (--max-model-len)"),
    "kv-gb-nan": ("minillama", ["--prompt", "hi", "--kv-cache-gb", "nan"], "--kv-cache-gb) must be a finite number in (0, 1e+06]"),
    "kv-gb-0": ("minillama", ["--prompt", "hi", "--kv-cache-gb", "0"], "--kv-cache-gb) must be"),
    "kv-gb-below-a-block": ("minillama", [*RUN, "--kv-cache-gb", "1e-9"], "--kv-cache-gb 1e-09 holds no KV block of this model"),
    "gpu-util": ("minillama", ["--prompt", "hi", "--gpu-memory-utilization", "1.5"], "in (0, 1], got 1.5"),
    "seed-negative": ("minillama", ["--prompt", "hi", "--seed", "-1"], "seed (--seed) must be an integer in [0, 2**63)"),
    "temperature-nan": ("minillama", ["--prompt", "hi", "--temperature", "nan"], "temperature must be a finite number"),
    "temperature-negative": ("minillama", ["--prompt", "hi", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    "temperature-inf": ("minillama", ["--prompt", "hi", "--temperature", "inf"], "temperature must be a finite number"),
    "top-p-0": ("minillama", ["--prompt", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
    "top-p-2": ("minillama", ["--prompt", "hi", "--top-p", "2"], "top_p must be in (0, 1]"),
    "top-k-negative": ("minillama", ["--prompt", "hi", "--top-k", "-1"], "top_k must be an integer in [0, 2147483647]"),
    "max-tokens-0": ("minillama", ["--prompt", "hi", "--max-tokens", "0"], "max_tokens must be an integer in [1, 2147483647]"),
    "n-0": ("minillama", ["--prompt", "hi", "--n", "0"], "n (samples per prompt) must be an integer in [1, 64]"),
    "beam-width-0": ("minillama", ["--prompt", "hi", "--beam-width", "0"], "beam_width must be an integer in [1, 64]"),
    "n-and-beams": ("minillama", ["--prompt", "hi", "--n", "2", "--beam-width", "2"], "do not combine"),
    "length-penalty-nan": ("minillama", ["--prompt", "hi", "--length-penalty", "nan"], "length_penalty"),
    "record-beam-width-text": ("inspector", ["record", "--prompt", "hi", "--beam-width", "wide"], "invalid int value"),
    # python -m minillama: prompts and models
    "empty-prompt": ("minillama", ["--prompt", ""], "the prompt is empty"),
    "undecodable-prompt": ("minillama", ["--prompt", BAD_BYTES], "character 0 is the byte 0xff"),
    "undecodable-chat": ("minillama", ["--chat", "--prompt", "ok", "--prompt", BAD_BYTES], "the byte 0xff"),
    "lone-surrogate": ("minillama", ["--prompt", "abc\ud800", *TINY], r"character 3 is U+D800"),
    "model-missing": ("minillama", ["--prompt", "hi", "--model", "{root}/nope"], "does not exist"),
    "model-is-a-file": ("minillama", ["--prompt", "hi", "--model", "{file}"], "is a file, not a model directory"),
    "model-empty-dir": ("minillama", ["--prompt", "hi", "--model", "{empty}"], "a model directory needs config.json"),
    # a command line's prompts are text: no message may ask for token ids, which none can take
    "no-tokenizer": ("minillama", ["--prompt", "hi", "--model", "{bare}", "--device", "cpu"],
                     "has no tokenizer files (tokenizer.json, tokenizer_config.json), so its text prompts cannot be encoded"),
    "record-no-tokenizer": ("inspector", [*RECORD, "--model", "{bare}", "--device", "cpu"],
                            "has no tokenizer files (tokenizer.json, tokenizer_config.json), so its text prompts cannot be encoded"),
    "kv-blocks-beyond-memory": ("minillama", [*RUN, "--num-kv-blocks", "2000000000"], "the KV cache would take"),
    "kv-gb-beyond-memory": ("minillama", [*RUN, "--kv-cache-gb", "1000000", "--max-num-seqs", "1000000000"],
                            "blocks of 16 tokens fit"),
    "context-too-long": ("minillama", [*RUN, "--max-model-len", "4096"], "exceeds the model's context (128 positions)"),
    "prompt-too-long": ("minillama", ["--prompt", "x" * 200, *TINY], "the prompt has 200 tokens"),
    "attention-needs-cuda": ("minillama", [*RUN, "--attention", "flash-attn", "--dtype", "bfloat16"], "needs a CUDA device"),
    "attention-triton-on-cpu": ("minillama", [*RUN, "--attention", "triton", "--dtype", "bfloat16"],
                                "--attention triton needs a CUDA device (got cpu)"),
    "attention-cpu-fp32": ("minillama", [*RUN, "--attention", "cpu", "--dtype", "bfloat16"], "float32 only"),
    # a model directory's files are read as untrusted: regular files only, small ones bounded
    "config-a-pipe": ("minillama", ["--prompt", "hi", "--model", "{config-pipe}"], "is not a regular file"),
    "config-dev-zero": ("minillama", ["--prompt", "hi", "--model", "{config-zero}"], "is not a regular file"),
    "weights-a-pipe": ("minillama", ["--prompt", "hi", "--model", "{weights-pipe}"], "is not a regular file"),
    "tokenizer-a-pipe": ("minillama", ["--prompt", "hi", "--model", "{tokenizer-pipe}"], "is not a regular file"),
    "layers-beyond-memory": ("minillama", ["--prompt", "hi", "--model", "{layers-huge}"], "the model's weights in float32 would take"),
    "bos-outside-vocab": ("minillama", ["--prompt", "hi", "--model", "{bos-huge}"], "bos_token_id must be a token id in [0, 256)"),
    "eos-outside-vocab": ("minillama", ["--prompt", "hi", "--model", "{eos-huge}"], "eos_token_id must be a token id in [0, 256)"),
    "chat-template-broken": ("minillama", ["--prompt", "hi", "--chat", "--model", "{chat-broken}"],
                             "this model's chat template failed (TemplateSyntaxError"),
    "chat-template-loops": ("minillama", ["--prompt", "hi", "--chat", "--model", "{chat-loops}"],
                            "this model's chat template ran past 2 s (is it looping?); run without chat"),
    "model-unknown-user": ("minillama", ["--prompt", "hi", "--model", "~no-such-user-here/m"], "cannot expand ~"),
    # numbers too large for what is computed from them
    "kv-gb-overflow": ("minillama", [*RUN, "--kv-cache-gb", "1e308"], "kv_cache_memory_gb (--kv-cache-gb) must be a finite number in"),
    "max-num-seqs-huge": ("minillama", [*RUN, "--max-num-seqs", "99999999999999999999999"], "must be an integer <= 2,147,483,647"),
    "block-size-huge": ("minillama", [*RUN, "--block-size", "3000000000"], "must be an integer <= 2,147,483,647"),
    # python -m inspector
    "no-command": ("inspector", [], "the following arguments are required: command"),
    # an unknown flag before the subcommand is named, not hidden behind "required: command"
    "unknown-flag-no-command": ("inspector", ["--no-such"], "unrecognized arguments: --no-such"),
    "unknown-flag-before-command": ("inspector", ["--no-such=1", "show", "{junk}"], "unrecognized arguments: --no-such=1"),
    "record-no-output": ("inspector", ["record", "--prompt", "hi"], "required: -o/--output"),
    "record-no-folder": ("inspector", ["record", "--prompt", "hi", "-o", "/nonexistent/r.mltrace"],
                         "-o /nonexistent/r.mltrace: there is no folder /nonexistent"),
    "record-to-a-folder": ("inspector", ["record", "--prompt", "hi", "-o", "{empty}"], "is a folder"),
    "record-max-steps-0": ("inspector", [*RECORD, "--max-steps", "0"], "argument --max-steps: invalid integer >= 1"),
    "record-top-k-0": ("inspector", [*RECORD, "--logits-top-k", "0"], "argument --logits-top-k"),
    "record-budget-negative": ("inspector", [*RECORD, "--budget-mb", "-1"], "argument --budget-mb"),
    "record-budget-nan": ("inspector", [*RECORD, "--budget-mb", "nan"], "argument --budget-mb"),
    "record-seqs-negative": ("inspector", [*RECORD, "--attention-seqs", "-1"], "argument --attention-seqs"),
    "record-seqs-beyond": ("inspector", [*RECORD, *TINY, "--attention-seqs", "0", "5"],
                           "--attention-seqs 5: there are 1 prompt(s), numbered 0 to 0"),
    "record-seqs-repeated": ("inspector", [*RECORD, *TINY, "--attention-seqs", "0", "0"],
                             "--attention-seqs 0 is given more than once"),
    "record-budget-huge": ("inspector", [*RECORD, "--budget-mb", "1e308"], "argument --budget-mb: 1e308 is too large"),
    # A flag another given flag leaves unread: it was accepted without a word, and did nothing.
    **{f"{name}-{order}": (cli, [*prefix, *(pair if order == "as-given" else pair[2:] + pair[:2])], fragment)
       for name, cli, prefix, pair, fragment in [
           ("kv-gb-with-blocks", "minillama", ["--prompt", "hi"], ["--num-kv-blocks", "8", "--kv-cache-gb", "1.0"],
            "argument --kv-cache-gb: not read with --num-kv-blocks (a KV cache given in blocks is not sized from memory)"),
           ("gpu-util-with-blocks", "minillama", ["--prompt", "hi"], ["--num-kv-blocks", "8", "--gpu-memory-utilization",
            "0.5"], "argument --gpu-memory-utilization: not read with --num-kv-blocks"),
           # Each device sizes its KV cache by one flag: the other one is read by nothing there.
           ("gpu-util-on-cpu", "minillama", ["--prompt", "hi"], ["--device", "cpu", "--gpu-memory-utilization", "0.5"],
            "argument --gpu-memory-utilization: not read on a CPU, whose KV cache --kv-cache-gb sizes"),
           ("record-gpu-util-on-cpu", "inspector", RECORD, ["--device", "cpu", "--gpu-memory-utilization", "0.9"],
            "argument --gpu-memory-utilization: not read on a CPU"),
           ("record-kv-gb-with-blocks", "inspector", RECORD, ["--kv-blocks", "8", "--kv-cache-gb", "2"],
            "argument --kv-cache-gb: not read with --num-kv-blocks"),
           ("replay-kv-gb-with-blocks", "inspector", REPLAY, ["--num-kv-blocks", "8", "--kv-cache-gb", "2"],
            "argument --kv-cache-gb: not read with --num-kv-blocks"),
       ] for order in ("as-given", "swapped")},
    **{f"{name}-{cli}": (cli, [*(RECORD if cli == "inspector" else ["--prompt", "hi"]), *argv], fragment)
       for name, argv, fragment in [
           ("temperature-with-beams", ["--beam-width", "2", "--temperature", "0.7"],
            "argument --temperature: not read by a beam search (--beam-width > 1), which is deterministic"),
           ("top-p-with-beams", ["--top-p", "0.5", "--beam-width", "3"], "argument --top-p: not read by a beam search"),
           ("top-k-with-beams", ["--beam-width", "2", "--top-k", "5"], "argument --top-k: not read by a beam search"),
           ("length-penalty-without-beams", ["--length-penalty", "2"],
            "argument --length-penalty: not read without a beam search: it scores finished beams"),
           ("length-penalty-with-one-beam", ["--length-penalty", "2", "--beam-width", "1"], "not read without a beam"),
           # The command lines' temperature defaults to 0 (greedy): --top-p alone sampled nothing.
           ("top-p-greedy-by-default", ["--top-p", "0.9"], "argument --top-p: not read by greedy decoding (--temperature 0"),
           ("top-k-greedy", ["--top-k", "5", "--temperature", "0"], "argument --top-k: not read by greedy decoding"),
       ] for cli in ("minillama", "inspector")},
    "record-seqs-without-attention": ("inspector", [*RECORD, "--no-attention", "--attention-seqs", "0"],
                                      "--attention-seqs picks prompts whose attention (or --logit-lens) is recorded, and "
                                      "--no-attention records none"),
    "record-steps-huge": ("inspector", [*RECORD, "--max-steps", "1e30"], "argument --max-steps"),
    "record-kv-gb-overflow": ("inspector", [*RECORD, *TINY, "--kv-cache-gb", "1e308"], "--kv-cache-gb"),
    "record-undecodable": ("inspector", ["record", "--prompt", BAD_BYTES, "-o", "{root}/r.mltrace"], "the byte 0xff"),
    "record-undecodable-chat": ("inspector", [*RECORD, "--chat", "--prompt", BAD_BYTES], "the byte 0xff"),
    "record-device": ("inspector", [*RECORD, "--device", "banana"], "unknown device"),
    "record-kv-blocks-0": ("inspector", [*RECORD, "--kv-blocks", "0"], "num_kv_blocks"),
    "record-model-file": ("inspector", [*RECORD, "--model", "{file}"], "is a file, not a model directory"),
    "show-missing": ("inspector", ["show", "{root}/missing.mltrace"], "does not exist"),
    "show-junk": ("inspector", ["show", "{junk}"], "not a .mltrace file"),
    "show-a-folder": ("inspector", ["show", "{empty}"], "{empty}"),
    "show-step-out-of-range": ("inspector", ["show", "{trace}", "--step", "999"], "--step 999: the trace has steps 0 to"),
    "show-step-negative": ("inspector", ["show", "{trace}", "--step", "-1"], "--step -1"),
    "chrome-no-folder": ("inspector", ["export-chrome", "{trace}", "-o", "/nonexistent/t.json"], "there is no folder"),
    "chrome-to-a-folder": ("inspector", ["export-chrome", "{trace}", "-o", "{empty}"], "is a folder"),
    # A trailing slash names a folder even where none exists yet: Path("new/") would be a file "new".
    "chrome-to-a-new-folder": ("inspector", ["export-chrome", "{trace}", "-o", "{root}/new/"], "is a folder"),
    "record-to-a-new-folder": ("inspector", ["record", "--prompt", "hi", "-o", "{root}/new/"], "is a folder"),
    "bench-huge-config": ("bench", ["--config", "{layers-huge}/config.json"], "config.json's weights in float32 would take"),
    "recording-no-prompts": ("recording", ["--prompts", "0"], "--prompts: invalid integer >= 1"),
    "recording-too-many-repeats": ("recording", ["--repeats", "1000"], "1000 is too large"),
    "app-empty-trace": ("app", ["--trace", ""], "--trace: invalid path (not empty)"),
    "bench-ui-empty-trace": ("bench-ui", ["--trace", ""], "--trace: invalid path (not empty)"),
    # Every -o refuses what is not a regular file: a device (the trace would replace it whole,
    # or vanish into /dev/null) and a pipe (the write would wait for a reader for ever).
    "record-to-a-device": ("inspector", ["record", "--prompt", "hi", "-o", "/dev/null"], "is not a regular file"),
    "record-to-a-pipe": ("inspector", ["record", "--prompt", "hi", "-o", "{pipe}"], "is not a regular file"),
    "chrome-to-a-device": ("inspector", ["export-chrome", "{trace}", "-o", "/dev/full"], "is not a regular file"),
    "chrome-to-a-pipe": ("inspector", ["export-chrome", "{trace}", "-o", "{pipe}"], "is not a regular file"),
    "replay-to-a-device": ("inspector", ["replay", "{trace}", "-o", "/dev/full"], "is not a regular file"),
    "replay-to-a-pipe": ("inspector", ["replay", "{trace}", "-o", "{pipe}"], "is not a regular file"),
    # An -o naming the file the command reads: export-chrome wrote its timings over the trace.
    "chrome-over-its-trace": ("inspector", ["export-chrome", "{trace}", "-o", "{trace}"],
                              "-o {trace} is the file this command reads ({trace})"),
    "chrome-over-its-trace-by-a-link": ("inspector", ["export-chrome", "{trace}", "-o", "{link}"],
                                        "is the file this command reads"),
    "replay-over-its-trace": ("inspector", ["replay", "{trace}", "--model", "{tiny}", "-o", "{trace}"],
                              "is the file this command reads"),
    "replay-over-its-trace-by-a-link": ("inspector", ["replay", "{link}", "--model", "{tiny}", "-o", "{trace}"],
                                        "is the file this command reads"),
    # A switch and its opposite, or a flag and its alias, given together: the last one won without a word.
    "replay-prefix-caching-both-ways": ("inspector", [*REPLAY, "--prefix-caching", "--no-prefix-caching"],
                                        "argument --no-prefix-caching: not allowed with argument --prefix-caching"),
    "replay-eager-both-ways": ("inspector", [*REPLAY, "--eager", "--cuda-graphs"],
                               "argument --cuda-graphs: not allowed with argument --eager"),
    "replay-fused-ops-both-ways": ("inspector", [*REPLAY, "--fused-ops", "--no-fused-ops"],
                                   "argument --no-fused-ops: not allowed with argument --fused-ops"),
    "replay-kv-blocks-and-its-alias": ("inspector", [*REPLAY, "--kv-blocks", "4", "--num-kv-blocks", "8"],
                                       "argument --num-kv-blocks: not allowed with argument --kv-blocks"),
    "record-kv-blocks-and-its-alias": ("inspector", [*RECORD, "--num-kv-blocks", "8", "--kv-blocks", "4"],
                                       "argument --kv-blocks: not allowed with argument --num-kv-blocks"),
    "replay-no-output": ("inspector", ["replay", "{trace}"], "required: -o/--output"),
    "replay-no-folder": ("inspector", ["replay", "{trace}", "-o", "/nonexistent/r.mltrace"], "there is no folder"),
    "replay-junk": ("inspector", [*REPLAY_JUNK], "not a .mltrace file"),
    "replay-missing": ("inspector", ["replay", "{root}/missing.mltrace", "-o", "{root}/b.mltrace"], "does not exist"),
    "replay-kv-blocks-0": ("inspector", [*REPLAY, "--kv-blocks", "0"], "num_kv_blocks (--num-kv-blocks)"),
    "replay-block-size-text": ("inspector", [*REPLAY, "--block-size", "big"], "argument --block-size: invalid int"),
    "replay-seed-negative": ("inspector", [*REPLAY, "--seed", "-1"], "seed (--seed) must be an integer in [0, 2**63)"),
    "replay-device": ("inspector", [*REPLAY, "--device", "banana"], "unknown device"),
    "replay-other-weights": ("inspector", ["replay", "{trace}", "--model", "{other}", "-o", "{root}/b.mltrace"],
                             "different weights: the trace's model (tiny) has fingerprint"),
    "replay-too-long": ("inspector", [*REPLAY, "--max-model-len", "2"], "request #0 of the trace: the prompt has 2 tokens; this engine's max_model_len is 2"),
    "diff-one-trace": ("inspector", ["diff", "{trace}"], "the following arguments are required: b"),
    "diff-missing": ("inspector", ["diff", "{trace}", "{root}/missing.mltrace"], "does not exist"),
    "diff-junk": ("inspector", ["diff", "{junk}", "{trace}"], "not a .mltrace file"),
    # python app.py (each refused before a server starts or a model loads)
    "app-lan-without-auth": ("app", ["--host", "0.0.0.0"], "--auth USER:PASSWORD"),
    "app-bad-auth": ("app", ["--auth", "nopassword"], "--auth takes USER:PASSWORD"),
    "app-auth-not-utf-8": ("app", ["--auth", "ada:" + BAD_BYTES], "--auth: USER:PASSWORD is not UTF-8 text"),
    "app-port": ("app", ["--port", "99999"], "argument --port: invalid port (1 to 65535) value: '99999'"),
    "app-sessions-0": ("app", ["--max-sessions", "0"], "argument --max-sessions"),
    "app-idle-nan": ("app", ["--idle-minutes", "nan"], "argument --idle-minutes"),
    "app-device": ("app", ["--device", "banana"], "unknown device"),
    "app-max-model-len": ("app", ["--max-model-len", "0"], "max_model_len (--max-model-len)"),
    "app-model-file": ("app", ["--model", "{file}"], "is a file, not a model directory"),
    "app-context": ("app", [*TINY, "--max-model-len", "4096"], "exceeds the model's context"),
    "app-upload-huge": ("app", ["--upload-mb", "99999999999999999999"], "argument --upload-mb: 99999999999999999999 is too large"),
    "app-budget-huge": ("app", ["--trace-budget-mb", "1e308"], "argument --trace-budget-mb: 1e308 is too large"),
    "app-kv-mb-0": ("app", ["--max-kv-mb", "0"], "argument --max-kv-mb: invalid finite number > 0 value: '0'"),
    "app-idle-0": ("app", ["--idle-minutes", "0"], "argument --idle-minutes: invalid finite number > 0 value: '0'"),
    "app-kv-mb-no-block": ("app", [*TINY, "--max-kv-mb", "1e-6"], "--max-kv-mb 1e-06 leaves a session no KV block"),
    "app-config-a-pipe": ("app", ["--model", "{config-pipe}"], "is not a regular file"),
    # python -m benchmarks.webui
    "bench-ui-moves-0": ("bench-ui", ["--moves", "0"], "argument --moves"),
    "bench-ui-steps-1": ("bench-ui", ["--steps", "1"], "argument --steps: invalid integer >= 3"),
    "bench-ui-short-trace": ("bench-ui", ["--trace", "{short}"], "has 2 step(s); the slider needs at least 3"),
    "app-trace-junk": ("app", ["--trace", "{junk}"], "not a .mltrace file"),
    "app-trace-folder": ("app", ["--trace", "{empty}"], "{empty}"),
    "app-unknown-flag": ("app", ["--bogus"], "unrecognized arguments: --bogus"),
    "app-host-unknown": ("app", ["--host", "no-such-host.invalid", "--no-auth"], "--host no-such-host.invalid: no such address"),
    "app-trace-with-model": ("app", ["--trace", "{trace}", "--model", "{tiny}"], "argument --model: not read with --trace"),
    "app-trace-with-device": ("app", ["--trace", "{trace}", "--device", "cpu"], "argument --device: not read with --trace"),
    "app-trace-with-max-new-tokens": ("app", ["--trace", "{trace}", "--max-new-tokens", "8"], "argument --max-new-tokens: not read with --trace"),
    "app-trace-with-max-sequences": ("app", ["--trace", "{trace}", "--max-sequences", "4"], "argument --max-sequences: not read with --trace"),
    "app-trace-with-max-kv-blocks": ("app", ["--trace", "{trace}", "--max-kv-blocks", "16"], "argument --max-kv-blocks: not read with --trace"),
    "app-trace-with-max-kv-mb": ("app", ["--trace", "{trace}", "--max-kv-mb", "64"], "argument --max-kv-mb: not read with --trace"),
    "app-trace-with-max-steps": ("app", ["--trace", "{trace}", "--max-steps", "10"], "argument --max-steps: not read with --trace"),
    "app-trace-with-trace-budget-mb": ("app", ["--trace", "{trace}", "--trace-budget-mb", "32"], "argument --trace-budget-mb: not read with --trace"),
    # Given at its default value, it is given all the same.
    "app-trace-with-default-max-new-tokens": ("app", ["--trace", "{trace}", "--max-new-tokens", "512"],
                                              "argument --max-new-tokens: not read with --trace"),
    # python -m benchmarks.engine
    "bench-device": ("bench", ["--device", "banana"], "unknown device"),
    "bench-config-missing": ("bench", ["--config", "/nonexistent.json"], "no such file"),
    "bench-config-bad": ("bench", ["--config", "{file}"], "is not valid JSON"),
    # It failed as an internal error once the engine's run was over, building the HF peer.
    "bench-config-hf-field": ("bench", ["--config", "{hf-field}"], "--config {hf-field}: Validation error for field 'use_cache'"),
    # --config 7b was reported as "7b is missing: a model directory needs config.json"; "*" picked the 8B shape.
    "recording-config-unknown": ("recording", ["--config", "7b"], "--config 7b: no such file; give 1b, 3b, 8b"),
    "bench-config-glob": ("bench", ["--config", "*"], "--config *: no such file"),
    "bench-gpu-config-empty": ("bench", ["--gpu", "--config", ""], "--config : no such file"),  # not read as 1b
    # A path that is there but no file was "no such file" too.
    "bench-config-folder": ("bench", ["--config", "{empty}"], "--config {empty}: is not a regular file (a folder"),
    "bench-config-pipe": ("bench", ["--config", "{pipe}"], "--config {pipe}: is not a regular file"),
    "recording-config-device": ("recording", ["--config", "/dev/zero"], "--config /dev/zero: is not a regular file"),
    # Path("") is ".": the current folder was read as the model, or named as a folder.
    "model-empty-path": ("minillama", ["--prompt", "hi", "--model", ""], "the model path is empty"),
    "chrome-to-empty-path": ("inspector", ["export-chrome", "{trace}", "-o", ""], "-o is empty: give a file name"),
    # pathlib lets OSError through for a name too long: it came out as "[Errno 36] ...", naming no flag.
    "record-to-a-long-name": ("inspector", ["record", "--prompt", "hi", "-o", "{root}/" + "r" * 300],
                              "-o {root}/rrr"),
    "bench-max-tokens-0": ("bench", ["--max-tokens", "0"], "argument --max-tokens"),
    "bench-requests-0": ("bench", ["--num-requests", "0"], "argument --num-requests"),
    "bench-peers": ("bench", ["--gpu", "--peers", "hf"], "--peers takes static, cb or both"),
    "bench-attention": ("bench", ["--attention", "flash"], "argument --attention: invalid choice"),
    "bench-kv-blocks-0": ("bench", ["--kv-blocks", "0"], "num_kv_blocks"),
    "bench-hf-requests-0": ("bench", ["--hf-requests", "0"], "argument --hf-requests"),
    "bench-async-maybe": ("bench", ["--async-scheduling", "maybe"], "argument --async-scheduling: invalid choice"),
    "bench-tp-0": ("bench", ["--tensor-parallel-size", "0"], "argument --tensor-parallel-size"),
    "bench-tp-no-gpu": ("bench", ["--tensor-parallel-size", "2"],
                        "argument --tensor-parallel-size: not read by the small workload (no mode flag); only by --gpu"),
    # A flag the chosen run does not read was ignored without a word (benchmarks/engine_modes.py).
    "bench-context-small": ("bench", ["--context", "100"],
                            "argument --context: not read by the small workload (no mode flag); only by --decode-steps"),
    "bench-context-default-gpu": ("bench", ["--gpu", "--context", "512"],
                                  "argument --context: not read by --gpu; only by --decode-steps"),
    "bench-hf-requests-small": ("bench", ["--hf-requests", "5"], "argument --hf-requests: not read by the small "
                                "workload (no mode flag); only by --gpu"),
    "bench-hf-requests-decode": ("bench", ["--decode-steps", "--hf-requests", "5"],
                                 "argument --hf-requests: not read by --decode-steps; only by --gpu"),
    "bench-device-gpu": ("bench", ["--gpu", "--device", "cuda"],
                         "argument --device: not read by --gpu; only by the small workload (no mode flag)"),
    "bench-kv-blocks-profile": ("bench", ["--profile", "--kv-blocks", "4"], "argument --num-kv-blocks: not read by --profile"),
    "bench-output-len-decode": ("bench", ["--decode-steps", "--output-len=3"],
                                "argument --output-len: not read by --decode-steps; only by --gpu, --async-ab or --profile"),
    "bench-async-async-ab": ("bench", ["--async-ab", "--async-scheduling", "off"],
                             "argument --async-scheduling: not read by --async-ab; only by --gpu or --decode-steps"),
    "bench-attention-split": ("bench", ["--gpu", "--tensor-parallel-size", "2", "--attention", "sdpa"],
                              "only by --gpu (without --tensor-parallel-size), --async-ab, --decode-steps or --profile"),
    "bench-eager-small": ("bench", ["--eager"], "argument --eager: not read by the small workload"),
    "bench-max-tokens-gpu": ("bench", ["--gpu", "--max-tokens", "8"], "argument --max-tokens: not read by --gpu"),
    "bench-peers-small": ("bench", ["--peers", "none"], "argument --peers: not read by the small workload"),
    "bench-two-modes": ("bench", ["--gpu", "--profile"], "argument --profile: not allowed with argument --gpu"),
    "bench-split-cb": ("bench", ["--gpu", "--tensor-parallel-size", "2", "--peers", "static,cb"],
                       "--peers cb: --tensor-parallel-size runs HF's static peer only"),
    # lengths past the model's context, refused before anything runs (on any machine)
    "bench-max-tokens-past-context": ("bench", ["--max-tokens", "100000"], "would pass the model's context of 8,192"),
    "bench-output-len-past-context": ("bench", ["--gpu", "--output-len", "200000"], "--output-len 200000: prompts of up"),
    "bench-context-past-context": ("bench", ["--decode-steps", "--context", "131072"], "would pass the model's context"),
    "bench-requests-huge": ("bench", ["--num-requests", "99999"], "--num-requests: 99999 is too large"),
    "bench-hf-more-than-requests": ("bench", ["--gpu", "--hf-requests", "300"], "is more than --num-requests 256"),
    # python -m benchmarks.sharing
    "sharing-n-1": ("sharing", ["--n", "1"], "argument --n"),
    "sharing-n-too-many": ("sharing", ["--n", "65"], "n (samples per prompt) must be an integer in [1, 64]"),
    "sharing-prompts-0": ("sharing", ["--num-prompts", "0"], "argument --num-prompts"),
    "sharing-tokens-1": ("sharing", ["--max-tokens", "1"], "argument --max-tokens"),
    "sharing-unknown-flag": ("sharing", ["--beams"], "unrecognized arguments: --beams"),
    "sharing-max-tokens-past-context": ("sharing", ["--max-tokens", "100000"], "would pass the model's context"),
    "sharing-more-prompts-than-it-has": ("sharing", ["--num-prompts", "9"], "the CPU workload has 8 chat prompts"),
    "sharing-prompts-huge": ("sharing", ["--num-prompts", "99999999"], "--num-prompts: 99999999 is too large"),
    "bench-ui-steps-huge": ("bench-ui", ["--steps", "99999999"], "--steps: 99999999 is too large"),
    "bench-ui-moves-huge": ("bench-ui", ["--moves", "99999"], "--moves: 99999 is too large"),
}

if not torch.cuda.is_available():  # with a GPU, --profile runs the workload
    BAD["bench-profile-no-gpu"] = ("bench", ["--profile"], "--profile need a CUDA GPU")


def one_line_error(capsys, cli: str, argv: list[str], status: int = 2) -> str:
    """Run the command line; check the status and that stderr is one line with no traceback."""
    assert CLIS[cli](argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("cli, argv, fragment", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_status_2(paths, capsys, cli, argv, fragment):
    err = one_line_error(capsys, cli, [arg.format(**paths) for arg in argv])
    prog = {"minillama": "python -m minillama", "inspector": "python -m inspector", "app": "app.py",
            "bench": "python -m benchmarks.engine", "sharing": "python -m benchmarks.sharing",
            "bench-ui": "python -m benchmarks.webui", "recording": "python -m benchmarks.recording"}[cli]
    assert err.startswith(f"{prog}: error: ") and fragment.format(**paths) in err


def test_good_input_still_runs(paths, capsys):
    assert minillama.__main__.main([*[a.format(**paths) for a in RUN], "--chat", "--max-tokens", "2"]) == 0
    assert "[2 tokens, length]" in capsys.readouterr().out
    assert inspector.__main__.main(["show", paths["trace"], "--step", "0"]) == 0
    assert capsys.readouterr().out.startswith("step 0 of")


def test_a_bug_is_an_internal_error_and_debug_shows_the_traceback(paths, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(llm_engine.LLMEngine, "step", broken)
    run = ["--prompt", "hi", "--model", paths["tiny"], "--device", "cpu"]
    err = one_line_error(capsys, "minillama", run, status=1)
    assert err == ("python -m minillama: internal error: ZeroDivisionError: division by zero; "
                   "run with --debug for the traceback\n")
    with pytest.raises(ZeroDivisionError):
        minillama.__main__.main([*run, "--debug"])
    with pytest.raises(ZeroDivisionError):  # --debug works before or after the subcommand
        inspector.__main__.main(["--debug", "record", "--prompt", "hi", "--model", paths["tiny"], "--device", "cpu",
                                 "-o", paths["root"] + "/r.mltrace"])


def test_gpu_memory_flags_are_read_on_cuda_and_kv_cache_gb_is_not(paths, capsys, monkeypatch):
    """On a CUDA machine (as torch reports it here) --device auto runs on CUDA, whose KV cache
    --gpu-memory-utilization sizes: --kv-cache-gb is refused as unread, and the other is not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = one_line_error(capsys, "minillama", ["--prompt", "hi", "--kv-cache-gb", "2"])
    assert "argument --kv-cache-gb: not read on CUDA, whose KV cache --gpu-memory-utilization sizes" in err
    from minillama.cli import ENGINE_UNREAD, refuse_unread

    parser = minillama.__main__.build_parser()
    argv = ["--prompt", "hi", "--gpu-memory-utilization", "0.5"]
    refuse_unread(parser, argv, parser.parse_args(argv), ENGINE_UNREAD)  # read: no refusal


def test_sampling_flags_beside_a_temperature_still_run(paths, capsys):
    argv = [*RUN, "--temperature", "0.7", "--top-p", "0.9", "--top-k", "5", "--seed", "1", "--max-tokens", "2"]
    assert minillama.__main__.main([a.format(**paths) for a in argv]) == 0, capsys.readouterr().err


def test_extreme_length_penalties_still_run(paths, capsys):
    """A length penalty so large (or so negative) that generated_len ** penalty leaves float's
    range: the divisor is infinite (or zero), not an OverflowError."""
    for penalty in ("2000", "-2000"):
        argv = [*RUN, "--beam-width", "2", "--length-penalty", penalty, "--max-tokens", "3"]
        assert minillama.__main__.main([a.format(**paths) for a in argv]) == 0, capsys.readouterr().err


def test_debug_raises_bad_input_too(paths):
    from minillama.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown device"):
        minillama.__main__.main(["--prompt", "hi", "--device", "banana", "--debug"])


def test_ctrl_c_is_one_line_and_status_130(paths, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llm_engine.LLMEngine, "step", interrupted)
    for cli, argv in [("minillama", RUN), ("inspector", [*RECORD, *TINY])]:
        err = one_line_error(capsys, cli, [a.format(**paths) for a in argv], status=130)
        assert err.endswith(": interrupted\n")


def test_a_broken_pipe_other_than_stdout_is_bad_input_not_a_quiet_exit(capsys):
    """Only stdout's reader leaving ends a command quietly (141); a pipe the command itself wrote
    to (a socket, a child's stdin) that broke is reported as any OSError is."""
    from minillama.cli.errors import run_cli

    def broken(argv: list[str]) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert run_cli("prog", broken, []) == 2
    err = capsys.readouterr().err
    assert err == "prog: error: [Errno 32] Broken pipe\n"


def test_each_benchmark_flag_says_which_runs_read_it():
    """A flag left out of READ_BY would be refused by no run, and ignored by some again."""
    from benchmarks.engine_modes import READ_BY

    everywhere = {"help", "debug", "config", "gpu", "decode_steps", "async_ab", "profile"}  # read by all, or modes
    assert {action.dest for action in benchmarks.engine.build_parser()._actions} - everywhere == set(READ_BY)


def test_help_still_exits_0(capsys):
    for main, argv in [(minillama.__main__.main, ["--help"]), (inspector.__main__.main, ["record", "--help"])]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0 and "--debug" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy: the module was imported already
@pytest.mark.parametrize("module", ["floor", "all_reduce", "kernel_profile", "tensor_parallel", "workloads",
                                    "engine_modes"])
def test_a_benchmark_module_that_is_no_command_says_which_are(capsys, module):
    """`python -m benchmarks.floor` ran nothing, printed nothing and exited 0: a module the
    benchmarks are made of now names the commands in one line, status 2."""
    with pytest.raises(SystemExit) as info:
        runpy.run_module(f"benchmarks.{module}", run_name="__main__")
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"python -m benchmarks.{module}: error: ") and "run python -m benchmarks.engine" in err


# -- real processes: nothing but the one line reaches stderr ------------------------------------

PROCESSES = {
    # Undecodable argv bytes arrive as lone surrogates; refused before any model loads.
    "minillama-bytes": (["-m", "minillama", "--prompt", b"\xff\xfe caf\xe9"], "character 0 is the byte 0xff"),
    "inspector-output": (["-m", "inspector", "record", "--prompt", "hi", "-o", "/nonexistent/r.mltrace"],
                         "there is no folder /nonexistent"),
    "bench-device": (["-m", "benchmarks.engine", "--device", "banana"], "unknown device"),
    "bench-unread-flag": (["-m", "benchmarks.engine", "--context", "100"], "argument --context: not read by"),
}


@pytest.mark.parametrize("argv, fragment", PROCESSES.values(), ids=PROCESSES.keys())
def test_a_real_process_prints_one_line(argv, fragment):
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["-m", "minillama", "--prompt", "hi"],
                                  ["-m", "inspector", "record", "--prompt", "hi", "-o", "{root}/cache.mltrace"],
                                  ["app.py", "--port", "{port}"]], ids=["minillama", "inspector", "app"])
def test_a_cache_folder_that_is_a_file_is_named_in_one_line(paths, argv):
    """MINILLAMA_CACHE naming a file: "[Errno 17] File exists: '...'", which named no variable,
    when the embedded model was first converted."""
    env = {**os.environ, "MINILLAMA_CACHE": paths["file"]}
    done = subprocess.run([sys.executable, *[a.format(**paths) for a in argv]], cwd=ROOT, capture_output=True,
                          timeout=120, env=env)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"MINILLAMA_CACHE={paths['file']!r} cannot hold minillama's cache: {paths['file']} is a file" in err


def test_a_reader_that_stops_reading_ends_the_command_quietly(paths):
    """`python -m inspector show run.mltrace | head -1`: once head has its line, writing fails.
    It printed "error: [Errno 32] Broken pipe", or "Exception ignored ... BrokenPipeError" at
    exit; a Unix tool stops without a word, status 141 (128 + SIGPIPE)."""
    child = subprocess.Popen([sys.executable, "-m", "inspector", "show", paths["trace"]], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has written anything: it starts in seconds
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and err == ""


UNWRITABLE = {"closed": (">&-", "[Errno 9] cannot write the output (stdout): it is closed"),
              "full": ("> /dev/full", "[Errno 28] cannot write the output (stdout): No space left on device")}


@pytest.mark.parametrize("argv", [["-m", "inspector", "show", "{trace}"],
                                  ["-m", "inspector", "show", "{trace}", "--step", "0"],
                                  ["-m", "inspector", "diff", "{trace}", "{short}"],
                                  ["-m", "minillama", *RUN, "--max-tokens", "2"]],
                         ids=["show", "show-step", "diff", "minillama"])
@pytest.mark.parametrize("output", UNWRITABLE)
def test_an_output_that_cannot_be_written_is_one_line_and_status_2(paths, argv, output):
    """`prog >&-` exited 0 having shown nothing (print writes nothing when stdout is closed);
    `prog > /dev/full` said "[Errno 28] No space left on device", naming no file."""
    redirect, message = UNWRITABLE[output]
    command = shlex.join([sys.executable, *[a.format(**paths) for a in argv]]) + " " + redirect
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.endswith(f": error: {message}\n"), err


def test_the_server_with_its_output_closed_says_so_before_loading_anything():
    """app.py writes its address and log to stdout, late: with stdout closed, uvicorn's logging
    failed as "internal error: ValueError: Unable to configure formatter 'default'"."""
    command = shlex.join([sys.executable, "app.py", "--port", "7999"]) + " >&-"
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert err == ("app.py: error: [Errno 9] cannot write the output (stdout): it is closed; "
                   "the server writes its address and log there\n")


def test_an_output_that_fails_only_at_the_last_flush_is_named_too(capsys, monkeypatch):
    """A regular file on a full disk takes print's text into its buffer; the write fails when
    run_cli flushes it at the end, and says it was the output's as a failed print does."""
    from minillama.cli.errors import run_cli

    class FullDisk(io.StringIO):
        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", FullDisk())
    assert run_cli("prog", lambda argv: print("answer"), []) == 2
    assert capsys.readouterr().err == "prog: error: [Errno 28] cannot write the output (stdout): No space left on device\n"


def test_an_answer_the_terminal_cannot_encode_is_escaped_not_an_internal_error(paths):
    """PYTHONIOENCODING=ascii (or a Latin-1 locale): printing "é" raised UnicodeEncodeError after
    the whole run, an internal error with status 1."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "minillama", *[a.format(**paths) for a in RUN], "--prompt", "café",
                           "--max-tokens", "2"], cwd=ROOT, capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert b"### caf\\xe9" in done.stdout and b"[2 tokens, length]" in done.stdout
