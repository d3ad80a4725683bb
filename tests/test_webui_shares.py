"""Share links' snapshots (webui/shares.py) are bounded in number and bytes, in all and per
client address: one client sharing again and again pushes out only its own oldest links."""

from __future__ import annotations

import pytest

from inspector import DebugSession
from minillama import EngineConfig, LLMEngine, SamplingParams
from webui.shares import Shares, link_host


@pytest.fixture(scope="module")
def trace(tiny_model_dir):
    path, _ = tiny_model_dir("gqa-tied-llama3")
    session = DebugSession(LLMEngine.from_pretrained(str(path), EngineConfig(device="cpu", num_kv_blocks=16)))
    session.add([1, 2, 3], SamplingParams(temperature=0, max_tokens=3))
    session.run()
    return session.trace


def test_one_client_sharing_again_and_again_pushes_out_only_its_own_links(trace):
    shares = Shares(max_shares=8)  # 2 per client
    others = [shares.share(trace, "a.mltrace", "10.0.0.1"), shares.share(trace, "b.mltrace", "10.0.0.2")]
    flood = [shares.share(trace, "x.mltrace", "10.0.0.9") for _ in range(20)]
    assert all(shares.get(i) is not None for i in others)  # 16 links of one client used to push these out
    assert [shares.get(i) is not None for i in flood] == [False] * 18 + [True] * 2  # its own newest two stay
    assert shares.get(others[0])[1] == "a.mltrace"


def test_snapshots_are_bounded_in_all_oldest_first(trace):
    shares = Shares(max_shares=4)  # 1 per client, 4 in all
    ids = [shares.share(trace, f"{i}.mltrace", f"10.0.0.{i}") for i in range(6)]
    assert [shares.get(i) is not None for i in ids] == [False, False, True, True, True, True]


def test_a_clients_bytes_are_bounded_and_a_too_large_trace_is_refused(trace):
    one = Shares(max_bytes=4 * 10**9)
    size = one._snapshots[one.share(trace, "t.mltrace", "c")].size
    shares = Shares(max_bytes=4 * (2 * size + size // 2))  # a client may keep two such snapshots' bytes
    ids = [shares.share(trace, "t.mltrace", "c") for _ in range(3)]
    assert [shares.get(i) is not None for i in ids] == [False, True, True]
    with pytest.raises(ValueError, match="too large to share"):
        Shares(max_bytes=4 * (size - 1)).share(trace, "t.mltrace", "c")


@pytest.mark.parametrize("share_id", [None, 5, "", "zz" * 12, "A" * 24, "0" * 25, ["0" * 24]])
def test_a_malformed_or_unknown_id_finds_nothing(trace, share_id):
    assert Shares().get(share_id) is None


@pytest.mark.parametrize(("asked_as", "shared_as", "named"), [
    ("localhost:7860", "192.168.1.5", "192.168.1.5:7860"),  # the serving machine's own browser
    ("127.0.0.1:7860", "192.168.1.5", "192.168.1.5:7860"),
    ("127.8.9.1:7860", "192.168.1.5", "192.168.1.5:7860"),
    ("[::1]:7860", "192.168.1.5", "192.168.1.5:7860"),
    ("LOCALHOST:7860", "192.168.1.5", "192.168.1.5:7860"),
    ("localhost", "192.168.1.5", "192.168.1.5"),
    ("192.168.1.5:7860", "192.168.1.5", "192.168.1.5:7860"),  # reached from the LAN: the address that worked
    ("demo.lan:7860", "192.168.1.5", "demo.lan:7860"),  # a name the LAN knows: kept
    ("localhost:7860", None, "localhost:7860"),  # a loopback server: only this machine can open it
    ("localhost:notaport", "192.168.1.5", "localhost:notaport"),  # a Host header the client made up
    ("", "192.168.1.5", ""),
])
def test_a_share_link_names_an_address_the_lan_can_open(asked_as, shared_as, named):
    assert link_host(asked_as, shared_as) == named
