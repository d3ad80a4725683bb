"""app.py's flags: when a login is required, and how the limits are read."""

from __future__ import annotations

import pytest

from webui.cli import AUTH_ENV, is_loopback, limits_from_args, parse_args, resolve_auth


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


@pytest.mark.parametrize("spec", ["nopassword", ":pw", "user:"])
def test_malformed_credentials_are_refused(spec):
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        resolve_auth(parse_args(["--auth", spec]), environ={})


def test_no_auth_and_auth_together_are_refused():
    with pytest.raises(ValueError, match="contradicts"):
        resolve_auth(parse_args(["--host", "0.0.0.0", "--no-auth"]), environ={AUTH_ENV: "a:b"})


def test_limits_come_from_the_flags_and_must_be_positive():
    limits = limits_from_args(parse_args(["--max-sessions", "3", "--max-new-tokens", "64", "--upload-mb", "5"]))
    assert (limits.max_sessions, limits.max_new_tokens, limits.upload_mb) == (3, 64, 5)
    with pytest.raises(ValueError, match="max_sessions must be positive"):
        limits_from_args(parse_args(["--max-sessions", "0"]))
