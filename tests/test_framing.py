"""squall/web/framing.py: when a connection's framing state can be let go.

No event loop: bytes in, and the question asked of websockets' Protocol.
"""

from __future__ import annotations

import logging
import os

from websockets.protocol import State

from squall.web.framing import between_frames, check_internals, new_framing

LOG = logging.getLogger("test.framing")


def masked(payload: bytes, *, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A client frame (masked, RFC 6455 §5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask
    return head + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_the_internals_it_reads_are_there() -> None:
    check_internals(new_framing(max_size=1024, logger=LOG))


def test_a_fresh_protocol_is_between_frames() -> None:
    assert between_frames(new_framing(max_size=1024, logger=LOG))


def test_after_a_whole_frame_it_is_between_frames() -> None:
    protocol = new_framing(max_size=1024, logger=LOG)
    protocol.receive_data(masked(b'{"type":"ping"}'))
    [frame] = protocol.events_received()
    assert frame.data == b'{"type":"ping"}'
    assert between_frames(protocol)


def test_part_of_a_frame_is_held_wherever_it_ends() -> None:
    """Cut after the 2-byte header, the reader's buffer is empty but the parser
    holds the header: a new protocol would read the mask as a header."""
    frame = masked(b'{"type":"ping"}')
    for cut in range(1, len(frame)):
        protocol = new_framing(max_size=1024, logger=LOG)
        protocol.receive_data(frame[:cut])
        assert protocol.events_received() == []
        assert not between_frames(protocol), cut
        protocol.receive_data(frame[cut:])
        assert len(protocol.events_received()) == 1
        assert between_frames(protocol)


def test_a_fragmented_message_begun_is_held() -> None:
    """The size limit spans the fragments: a new protocol would forget what came."""
    protocol = new_framing(max_size=1024, logger=LOG)
    protocol.receive_data(masked(b"first half", fin=False))
    assert len(protocol.events_received()) == 1
    assert not between_frames(protocol)
    protocol.receive_data(masked(b" and the rest", opcode=0x0))
    assert len(protocol.events_received()) == 1
    assert between_frames(protocol)


def test_a_closing_protocol_is_held() -> None:
    protocol = new_framing(max_size=1024, logger=LOG)
    protocol.receive_data(masked(b"\x03\xe8", opcode=0x8))  # close 1000
    protocol.events_received()
    protocol.data_to_send()
    assert protocol.state is not State.OPEN
    assert not between_frames(protocol)
