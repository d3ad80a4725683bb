"""mini-llama inspector: the web UI. Wiring only: flags -> model -> sessions -> page -> launch.

    python app.py                      # the embedded model, http://127.0.0.1:7860
    python app.py --model ~/models/Llama-3.2-1B-Instruct --device cuda
    python app.py --trace run.mltrace  # look at a saved trace, no model loaded
    python app.py --host 0.0.0.0 --auth me:secret   # share it on the LAN
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspector import TraceError, load
from minillama import ConfigError, EngineConfig, LLMEngine
from minillama.cli import Output, check_encodes_text, run_cli, tune_gc
from webui import Limits, SessionManager, serve
from webui.cli import (
    check_host,
    check_port,
    is_loopback,
    lan_address,
    limits_from_args,
    parse_args,
    resolve_auth,
)


def make_manager(args: argparse.Namespace, limits: Limits) -> SessionManager:
    if args.trace:
        trace = load(args.trace)
        return SessionManager(None, limits, trace, Path(args.trace).name)
    # The shared model. Its own KV pool is one block: every session gets a pool of its own.
    config = EngineConfig(device=args.device, dtype=args.dtype, attention=args.attention, num_kv_blocks=1,
                          max_model_len=args.max_model_len, enforce_eager=args.eager)
    engine = LLMEngine.from_pretrained(args.model, config)
    # The page's prompts are text: without tokenizer files every Add prompts answered "pass the
    # prompt as token ids", which no browser can.
    check_encodes_text(engine.tokenizer, args.model)
    manager = SessionManager(engine, limits)
    tune_gc()  # the server runs for hours (minillama/cli/gc_heap.py)
    return manager


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the server stops; 2 for bad input (one line on stderr); 1 for a bug
    (minillama/cli/errors.py)."""
    return run_cli("app.py", _main, argv, expected=(TraceError,))


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, Output):  # run_cli's (a test may call _main without it)
        sys.stdout.require("the server writes its address and log there")
    try:
        check_host(args.host)
        check_port(args.host, args.port)  # before the model loads, which takes a while
        auth = resolve_auth(args)
        limits = limits_from_args(args)
    except ValueError as error:  # each names the flag that is wrong
        raise ConfigError(str(error)) from error
    manager = make_manager(args, limits)
    # Logging starts once the server is about to run: a refusal above stays one line.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio checks its own routes at start
    shared_as = None if is_loopback(args.host) else lan_address()
    if shared_as is not None:
        print(f"Sharing on the LAN: http://{shared_as}:{args.port}")
        if auth is None:
            print("WARNING: running open (--no-auth): anyone on this network can use the model", file=sys.stderr)
    serve(manager, args.host, args.port, auth, shared_as=shared_as)
    return 0


if __name__ == "__main__":
    sys.exit(main())
