"""app.py's flags: when a login is required, and how the limits are read."""

from __future__ import annotations

import socket
from argparse import Namespace
from dataclasses import fields

import pytest

from minillama.errors import ConfigError
from webui import Limits
from webui.cli import AUTH_ENV, check_host, check_port, is_loopback, limits_from_args, parse_args, resolve_auth


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_serve_without_a_login(host):
    assert is_loopback(host)
    assert resolve_auth(parse_args(["--host", host]), environ={}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "myhost.local"])
def test_a_lan_host_needs_auth_or_an_explicit_no_auth(host):
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="--auth USER:PASSWORD"):
        resolve_auth(parse_args(["--host", host]), environ={})
    assert resolve_auth(parse_args(["--host", host, "--no-auth"]), environ={}) is None
    assert resolve_auth(parse_args(["--host", host, "--auth", "ada:s3cret:x"]), environ={}) == ("ada", "s3cret:x")
    assert resolve_auth(parse_args(["--host", host]), environ={AUTH_ENV: "bob:pw"}) == ("bob", "pw")


@pytest.mark.parametrize("spec", ["nopassword", ":pw", "user:", ":", ""])
def test_malformed_credentials_are_refused(spec):
    """An empty --auth too: it was read as not given, and a loopback server ran with no login."""
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        resolve_auth(parse_args(["--auth", spec]), environ={})
    with pytest.raises(ValueError, match="USER:PASSWORD"):  # whatever MINILLAMA_AUTH holds
        resolve_auth(parse_args(["--auth", spec]), environ={AUTH_ENV: "bob:pw"})


def test_an_empty_auth_variable_is_unset():
    assert resolve_auth(parse_args([]), environ={AUTH_ENV: ""}) is None


# Credentials no login form can send: the server started, and no one could log in.
UNTYPEABLE = {"not-utf-8-user": ("\udcffada:pw", "is not UTF-8 text (character 0)"),
              "not-utf-8-password": ("ada:caf\udce9", "is not UTF-8 text (character 7)"),
              "line-break": ("ada:pw\n", "a control character (character 6: U+000A)"),
              "escape": ("ada:\x1b[31mpw", "a control character (character 4: U+001B)"),
              "nul-like-bell": ("a\x07da:pw", "a control character (character 1: U+0007)")}


@pytest.mark.parametrize("spec, message", UNTYPEABLE.values(), ids=UNTYPEABLE)
def test_credentials_no_login_form_can_send_are_refused_by_their_source(spec, message):
    for argv, environ, source in [(["--auth", spec], {}, "--auth"), ([], {AUTH_ENV: spec}, AUTH_ENV)]:
        with pytest.raises(ValueError, match=f"^{source}: USER:PASSWORD ") as caught:
            resolve_auth(parse_args(["--host", "0.0.0.0", *argv]), environ=environ)
        assert message in str(caught.value) and "pw" not in str(caught.value)  # the secret is not shown


def test_no_auth_and_auth_together_are_refused():
    with pytest.raises(ValueError, match="contradicts"):
        resolve_auth(parse_args(["--host", "0.0.0.0", "--no-auth"]), environ={AUTH_ENV: "a:b"})


def test_limits_come_from_the_flags_and_must_be_positive():
    limits = limits_from_args(parse_args(["--max-sessions", "3", "--max-new-tokens", "64", "--upload-mb", "5"]))
    assert (limits.max_sessions, limits.max_new_tokens, limits.upload_mb) == (3, 64, 5)
    with pytest.raises(ValueError, match="limit max_sessions must be an integer >= 1, got 0"):
        limits_from_args(Namespace(**{**vars(parse_args([])), "max_sessions": 0}))


INT_LIMITS = ["--max-sessions", "--max-sessions-per-client", "--max-new-tokens", "--max-kv-blocks", "--max-steps",
              "--upload-mb"]
# 0 of these passed the parser, and Limits refused it naming its field ("limit max_kv_mb must be
# positive"), not the flag.
FLOAT_LIMITS = ["--idle-minutes", "--max-kv-mb", "--trace-budget-mb"]
BAD_LIMITS = [(flag, value) for flag in INT_LIMITS for value in ("0", "-1", "2.5", "x")] + [
    (flag, value) for flag in FLOAT_LIMITS for value in ("0", "-0", "0e5", "-1", "nan", "inf", "x")
]


@pytest.mark.parametrize("flag, value", BAD_LIMITS)
def test_bad_limit_flags_are_usage_errors_naming_the_flag(flag, value):
    with pytest.raises(ConfigError, match=f"argument {flag}: invalid .* value: '{value}'"):
        parse_args([flag, value])


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_a_port_outside_1_to_65535_is_a_usage_error(port):
    with pytest.raises(ConfigError, match=f"argument --port: invalid port .* value: '{port}'"):
        parse_args(["--port", port])


@pytest.mark.parametrize("host, message", [
    ("::1", "an IPv6 address"), ("::", "an IPv6 address"), ("255.255.255.255", "multicast or reserved"),
    ("224.0.0.1", "multicast or reserved"), ("8.8.8.8", "cannot listen there"), ("no-such-host.invalid", "no such address"),
])
def test_a_host_the_server_cannot_listen_on_is_refused_before_anything_loads(host, message):
    with pytest.raises(ValueError, match=message):
        check_host(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_hosts_this_machine_listens_on_pass(host):
    check_host(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_a_port_another_server_holds_is_refused_before_anything_loads(host):
    """It failed after the model had loaded, advising GRADIO_SERVER_PORT; a free port passes."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(ValueError, match=f"^--port {taken}: this machine cannot listen there on {host} "
                                             r"\(Address already in use\); give another --port$"):
            check_port(host, taken)
    check_port(host, taken)  # closed: free again


def test_an_empty_trace_path_is_refused_not_read_as_none():
    with pytest.raises(ConfigError, match="--trace: invalid path"):
        parse_args(["--trace", ""])


LIMIT_FIELDS = {spec.name: spec.type for spec in fields(Limits)}
NOT_A_COUNT = [0, -1, True, 2.5, "8", None, float("nan"), 2**31]
NOT_AN_AMOUNT = [0, -1.0, True, "8", None, float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("name, value", [(name, value) for name, kind in LIMIT_FIELDS.items()
                                         for value in (NOT_A_COUNT if kind == "int" else NOT_AN_AMOUNT)])
def test_every_limit_refuses_what_is_no_positive_number_of_its_kind(name, value):
    """Only `value <= 0` was checked: NaN passed it (and every later comparison: a NaN max_kv_mb
    let any pool through), True and 2.5 passed as counts, "8" raised TypeError."""
    with pytest.raises(ValueError, match=f"limit {name} must be"):
        Limits(**{name: value})


def test_every_limit_is_a_count_or_an_amount():
    assert set(LIMIT_FIELDS.values()) == {"int", "float"}
    assert Limits(max_kv_mb=1, idle_minutes=0.5).max_kv_mb == 1  # an int amount is a number too
