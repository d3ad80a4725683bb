"""app.py's flags, and the rules for sharing the UI on a LAN.

Serving on a non-loopback address shows everyone on the network the prompts and lets them run
the model, so it needs a password: --auth user:password (or MINILLAMA_AUTH=user:password),
unless --no-auth says, explicitly, to run open.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from minillama.cli import (
    ArgumentParser,
    Unread,
    add_debug_flag,
    add_model_args,
    int_at_least,
    number_above,
    path_text,
    refuse_unread,
)
from webui import defaults
from webui.limits import Limits

AUTH_ENV = "MINILLAMA_AUTH"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of `argv` (the command line's when None); ConfigError naming a flag that the
    others leave unread (TRACE_UNREAD)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_unread(parser, argv, args, TRACE_UNREAD)
    return args


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="app.py", description="mini-llama inspector: a visual debugger for Llama inference")
    m = p.add_argument_group("model (shared by every session)")
    add_model_args(m)
    m.add_argument("--max-model-len", type=int, default=defaults.ENGINE.max_model_len,
                   help="longest sequence a session may run (default: the model's context, at most 8192)")
    m.add_argument("--eager", action="store_true", default=defaults.ENGINE.enforce_eager, help="no CUDA graphs")
    m.add_argument("--trace", type=path_text, default=None, metavar="FILE",
                   help="open this .mltrace read-only, with no model loaded")
    s = p.add_argument_group("serving")
    s.add_argument("--host", default="127.0.0.1",
                   help="where to serve; 0.0.0.0 shares the UI on the LAN, which needs --auth or --no-auth "
                        "(default: %(default)s)")
    s.add_argument("--port", type=_port, default=7860, help="the port to serve on (default: %(default)s)")
    s.add_argument("--auth", default=None, metavar="USER:PASSWORD", help=f"require a login (or set {AUTH_ENV})")
    s.add_argument("--no-auth", action="store_true", help="serve a non-loopback host with no login (you are warned)")
    lim = p.add_argument_group("limits per server / per session")
    limit = Limits()
    lim.add_argument("--max-sessions", type=int_at_least(1), default=limit.max_sessions,
                     help="browser sessions at once (default: %(default)s)")
    lim.add_argument("--max-sessions-per-client", type=int_at_least(1), default=limit.max_sessions_per_client,
                     help="of those, from one client address (default: %(default)s)")
    lim.add_argument("--idle-minutes", type=number_above(0), default=limit.idle_minutes,
                     help="reclaim a session unused this many minutes (default: %(default)g)")
    lim.add_argument("--max-new-tokens", type=int_at_least(1), default=limit.max_new_tokens,
                     help="per request (default: %(default)s)")
    lim.add_argument("--max-sequences", type=int_at_least(1), default=limit.max_sequences,
                     help="sequences one session may ask for until Reset: prompts x samples, and forks "
                          "(default: %(default)s)")
    lim.add_argument("--max-kv-blocks", type=int_at_least(1), default=limit.max_kv_blocks,
                     help="per session (default: %(default)s)")
    lim.add_argument("--max-kv-mb", type=number_above(0), default=limit.max_kv_mb,
                     help="memory of a session's KV pool, MiB (default: %(default)g)")
    lim.add_argument("--max-steps", type=int_at_least(1), default=limit.max_steps,
                     help="recorded steps per session (default: %(default)s)")
    lim.add_argument("--trace-budget-mb", type=number_above(0), default=limit.trace_budget_mb,
                     help="recorder memory per session, MiB (default: %(default)g)")
    lim.add_argument("--upload-mb", type=int_at_least(1), default=limit.upload_mb,
                     help="largest trace file accepted, MiB (default: %(default)s)")
    add_debug_flag(p)
    return p


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return port


_port.__name__ = "port (1 to 65535)"  # argparse names the type in its message


def check_host(host: str) -> None:
    """ValueError unless the server can listen on `host`: a name the resolver knows, an address
    of this machine (uvicorn would otherwise fail after the model loaded, with a message about
    free ports), and not an IPv6 literal (Gradio writes host:port into its own URL unbracketed,
    and fails)."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"--host {host}: no such address ({exc})") from exc
    if ":" in host:
        raise ValueError(f"--host {host}: an IPv6 address, which the web server cannot use; "
                         "give 127.0.0.1 (this machine) or 0.0.0.0 (the LAN)")
    family, _, _, _, address = found[0]
    ip = ipaddress.ip_address(address[0])
    if ip.is_multicast or ip.is_reserved:  # 255.255.255.255 binds, and then no browser can reach it
        raise ValueError(f"--host {host}: a multicast or reserved address, not one a server listens on")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address[0], 0))  # any free port: only the address is tried
        except OSError as exc:
            raise ValueError(f"--host {host}: this machine cannot listen there ({exc.strerror})") from exc


def check_port(host: str, port: int) -> None:
    """ValueError when `port` on `host` (checked by check_host) is taken: the server failed only
    after the model had loaded, with Gradio's advice to set GRADIO_SERVER_PORT. Probed as the
    server binds (SO_REUSEADDR: a port a closed server left in TIME_WAIT is free to it); another
    process may still take it before the server starts."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"--port {port}: this machine cannot listen there on {host} ({exc.strerror}); "
                             "give another --port") from exc


# The flags about the model, which a --trace server does not load, and the limits of what a
# session's engine may run, record or replay, which a server with no model never reads.
MODEL_FLAGS = ("model", "device", "dtype", "attention", "max_model_len", "eager")
ENGINE_LIMIT_FLAGS = ("max_new_tokens", "max_sequences", "max_kv_blocks", "max_kv_mb", "max_steps", "trace_budget_mb")


# A --trace server reads none of them: given, it would be silently ignored. Given is on the
# command line whatever its value (`--device cpu` where cpu is the default too), as for the
# library's unread flags (minillama/cli/overrides.py).
TRACE_UNREAD = (
    Unread((*MODEL_FLAGS, *ENGINE_LIMIT_FLAGS), lambda args: args.trace is not None,
           "with --trace, which serves a saved trace and loads no model and starts no engine"),
)


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_sessions=args.max_sessions, max_sessions_per_client=args.max_sessions_per_client,
        idle_minutes=args.idle_minutes, max_new_tokens=args.max_new_tokens, max_sequences=args.max_sequences,
        max_kv_blocks=args.max_kv_blocks, max_kv_mb=args.max_kv_mb, max_steps=args.max_steps, trace_budget_mb=args.trace_budget_mb,
        upload_mb=args.upload_mb,
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_auth(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """The (user, password) to require, or None to serve open. Raises ValueError when a
    non-loopback host has neither --auth nor --no-auth, or the credentials are malformed."""
    environ = os.environ if environ is None else environ
    # `--auth ""` (a variable that expanded to nothing) asked for a login: `or` read it as not
    # given, and the server ran open. An empty MINILLAMA_AUTH is unset, as for any variable.
    spec = args.auth if args.auth is not None else environ.get(AUTH_ENV)
    if spec == "" and args.auth is not None:
        raise ValueError("--auth is empty: it takes USER:PASSWORD, both non-empty")
    if spec and args.no_auth:
        raise ValueError(f"--no-auth contradicts --auth / {AUTH_ENV}: give one")
    if spec:
        user, sep, password = spec.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth takes USER:PASSWORD, both non-empty")
        _check_typeable(spec, "--auth" if args.auth else AUTH_ENV)
        return user, password
    if not is_loopback(args.host) and not args.no_auth:
        raise ValueError(
            f"--host {args.host} shares the UI with the network: give --auth USER:PASSWORD (or set {AUTH_ENV}), "
            "or --no-auth to run it open on purpose"
        )
    return None


def _check_typeable(spec: str, source: str) -> None:
    """ValueError unless a login form can send `spec`: the server started, and no one could log
    in, with a password holding bytes that are not UTF-8 (Python keeps them as lone surrogates,
    which no browser sends) or a control character (a line break left in MINILLAMA_AUTH by a
    file it was read from, which no password field takes). Neither is shown: it is a secret."""
    try:
        spec.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{source}: USER:PASSWORD is not UTF-8 text (character {exc.start}), which no login "
                         "form can send") from exc
    control = next((i for i, c in enumerate(spec) if not c.isprintable()), None)
    if control is not None:
        raise ValueError(f"{source}: USER:PASSWORD holds a control character (character {control}: "
                         f"U+{ord(spec[control]):04X}), which no login form can send")


def lan_address() -> str:
    """This machine's address on its LAN: the source address of the default route (a UDP
    'connect' sends no packet), or the loopback address when there is no network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
