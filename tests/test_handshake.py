"""The link handshake and the throttled log, without sockets or a loop."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from squall.errors import HandshakeFailed
from squall.handshake import (
    check_web_hello, check_welcome, link_key, new_nonce, processor_hello, web_hello, welcome,
)
from squall.throttled_log import ThrottledLog

KEY = link_key("one secret")


def exchange(web_key: bytes, processor_key: bytes) -> None:
    """Run the three lines of the handshake; raises HandshakeFailed where it breaks."""
    processor_nonce, web_nonce = new_nonce(), new_nonce()
    hello, theirs = web_hello(processor_hello(processor_nonce), key=web_key, our_nonce=web_nonce)
    assert theirs == processor_nonce
    web_side_nonce = check_web_hello(hello, key=processor_key, our_nonce=processor_nonce)
    answer = welcome(key=processor_key, their_nonce=web_side_nonce, our_nonce=processor_nonce)
    check_welcome(answer, key=web_key, their_nonce=processor_nonce, our_nonce=web_nonce)


def test_same_key_authenticates_both_ways() -> None:
    exchange(KEY, KEY)


def test_link_key_is_not_the_secret_and_differs_per_secret() -> None:
    assert link_key("one secret") != b"one secret" and link_key("another") != KEY
    assert len(KEY) == 32


def test_processor_refuses_a_web_node_with_another_key() -> None:
    with pytest.raises(HandshakeFailed) as caught:
        exchange(link_key("other"), KEY)
    assert caught.value.code == "bad_proof"


def test_web_node_refuses_a_processor_with_another_key() -> None:
    processor_nonce, web_nonce = new_nonce(), new_nonce()
    hello, _ = web_hello(processor_hello(processor_nonce), key=KEY, our_nonce=web_nonce)
    foreign = welcome(key=link_key("other"), their_nonce=web_nonce, our_nonce=processor_nonce)
    with pytest.raises(HandshakeFailed) as caught:
        check_welcome(foreign, key=KEY, their_nonce=processor_nonce, our_nonce=web_nonce)
    assert caught.value.code == "bad_proof"


def test_a_proof_cannot_be_reflected() -> None:
    """The web node's own proof, sent back as a welcome, is not the processor's."""
    processor_nonce, web_nonce = new_nonce(), new_nonce()
    hello, _ = web_hello(processor_hello(processor_nonce), key=KEY, our_nonce=web_nonce)
    reflected = {"op": "welcome", "proof": hello["proof"]}
    with pytest.raises(HandshakeFailed):
        check_welcome(reflected, key=KEY, their_nonce=processor_nonce, our_nonce=web_nonce)


@pytest.mark.parametrize(("line", "code"), [
    (None, "hello_expected"),
    ({"op": "process"}, "hello_expected"),
    ({"op": "hello", "version": 1, "role": "web", "nonce": "0" * 32}, "bad_version"),
    ({"op": "hello", "version": 2, "nonce": "0" * 32}, "bad_hello"),
    ({"op": "hello", "version": 2, "role": "web", "nonce": "0" * 31}, "bad_hello"),
    ({"op": "hello", "version": 2, "role": "web", "nonce": "G" * 32}, "bad_hello"),
    ({"op": "hello", "version": 2, "role": "web", "nonce": "0" * 32}, "bad_proof"),
    ({"op": "hello", "version": 2, "role": "web", "nonce": "0" * 32, "proof": 7}, "bad_proof"),
    ({"op": "hello", "version": 2, "role": "web", "nonce": "0" * 32, "proof": "x" * 10**6}, "bad_proof"),
])
def test_bad_web_hellos(line: dict[str, Any] | None, code: str) -> None:
    with pytest.raises(HandshakeFailed) as caught:
        check_web_hello(line, key=KEY, our_nonce=new_nonce())
    assert caught.value.code == code and caught.value.reason


def test_processor_refusal_is_reported_with_its_code() -> None:
    with pytest.raises(HandshakeFailed) as caught:
        check_welcome({"op": "error", "code": "bad_proof", "reason": "no"}, key=KEY,
                      their_nonce=new_nonce(), our_nonce=new_nonce())
    assert caught.value.code == "bad_proof"


def test_throttled_log_logs_once_per_interval_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    throttled = ThrottledLog(logging.getLogger("test.throttled"), interval=60.0)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        assert throttled.note("refused 1", now=0.0)
        assert not any(throttled.note(f"refused {n}", now=float(n)) for n in range(2, 50))
        assert throttled.note("refused 50", now=60.0)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["refused 1", "refused 50 (48 more like it since the last one, not logged)"]


def test_processes_creating_the_secret_at_once_agree_on_it(tmp_path: Any) -> None:
    """A web node and a processor started together must derive one link key."""
    import concurrent.futures

    from squall.web.auth import load_or_create_secret

    for attempt in range(20):
        data_dir = str(tmp_path / f"data{attempt}")
        with concurrent.futures.ProcessPoolExecutor(4) as pool:
            values = set(pool.map(load_or_create_secret, [""] * 8, [data_dir] * 8))
        assert len(values) == 1, values
