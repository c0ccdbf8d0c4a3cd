"""Streams (store/stream.py): large messages as bounded chunks with flow control, exact actions, no sockets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from meshaios.store.stream import (
    Delivered,
    Emit,
    StreamAction,
    StreamConfig,
    StreamDone,
    StreamFailed,
    StreamReceiver,
    StreamSender,
    assemble,
)
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from meshaios.wire.payload import Payload

CFG = StreamConfig(min_bytes=1000, chunk=256, window=3, stall_timeout=5.0, max_incoming=2, max_bytes=1 << 20)


def big_message(n: int = 3000) -> tuple[dict[str, Any], list[Any]]:
    arr = np.arange(n, dtype=np.uint8)
    msg = {"t": M.PUT, "req": 7, "id": "p1", "val": Payload(b"blob", (arr, np.arange(5, dtype=np.uint8)))}
    return msg, encode(msg)


def wire(msg: dict[str, Any]) -> dict[str, Any]:
    """What the other side decodes: the message through the real codec, frames as bytes."""
    frames = encode(msg)
    return decode([bytes(memoryview(f)) for f in frames])


def deliver(
    sender: StreamSender, receiver: StreamReceiver, actions: list[StreamAction], now: float = 0.0
) -> tuple[list[Delivered], list[StreamAction], int]:
    """Pump actions between the two until quiet; returns deliveries, sender outcomes and the peak unacked bytes."""
    delivered: list[Delivered] = []
    outcomes: list[StreamAction] = []
    peak = acked = 0
    while actions:
        nxt: list[StreamAction] = []
        for a in actions:
            if isinstance(a, Emit):
                m = wire(a.msg)
                if m["t"] == M.XHEAD:
                    nxt += receiver.on_head("s", m["x"], m["sizes"], now)
                elif m["t"] == M.XCHUNK:
                    unacked = m["o"] + memoryview(m["d"].buffers[0]).nbytes - acked
                    peak = max(peak, unacked)
                    nxt += receiver.on_chunk("s", m["x"], m["o"], m["d"].buffers[0], now)
                else:
                    acked = m["n"]
                    nxt += sender.on_ack("r", m["x"], m["n"], m.get("err"), now)
            elif isinstance(a, Delivered):
                delivered.append(a)
            else:
                outcomes.append(a)
        actions = nxt
    return delivered, outcomes, peak


def test_a_large_message_arrives_whole_in_bounded_chunks() -> None:
    _msg, frames = big_message()
    s, r = StreamSender(CFG), StreamReceiver(CFG)
    assert s.should_stream(frames)
    first = s.open("r", frames, 0.0, tag="t1")
    chunks = [a for a in first if isinstance(a, Emit) and a.msg["t"] == M.XCHUNK]
    sizes = [memoryview(a.msg["d"].buffers[0]).nbytes for a in chunks]
    assert all(n <= CFG.chunk for n in sizes)
    assert CFG.window * CFG.chunk - CFG.chunk < sum(sizes) <= CFG.window * CFG.chunk  # a window, before any credit
    delivered, outcomes, peak = deliver(s, r, first)
    assert peak <= CFG.window * CFG.chunk
    assert outcomes == [StreamDone("r", 1, "t1")]
    (d,) = delivered
    out = decode(assemble(d.sizes, d.parts))
    assert out["id"] == "p1"
    assert out["val"].blob == b"blob"
    assert [bytes(b) for b in out["val"].buffers] == [bytes(np.arange(3000, dtype=np.uint8)), bytes(range(5))]
    assert s.open_streams == 0
    assert r.open_streams == 0


def test_small_messages_are_not_streamed() -> None:
    assert not StreamSender(CFG).should_stream(encode({"t": M.PING}))


def test_assemble_handles_empty_frames_and_chunks_spanning_frames() -> None:
    sizes = [3, 0, 5, 2]
    data = b"abcdefghij"
    parts = [data[0:4], data[4:9], data[9:10]]
    frames = assemble(sizes, parts)
    assert frames[0] == b"abc"
    assert [bytes(memoryview(f)) for f in frames[1:]] == [b"", b"defgh", b"ij"]


def test_the_receiver_refuses_too_large_or_too_many_streams() -> None:
    r = StreamReceiver(CFG)
    (refusal,) = r.on_head("s", 1, [CFG.max_bytes + 1], 0.0)
    assert isinstance(refusal, Emit)
    assert "exceed" in refusal.msg["err"]
    assert r.on_head("s", 2, [10], 0.0) == []
    assert r.on_head("s", 3, [10], 0.0) == []
    (refusal,) = r.on_head("s", 4, [10], 0.0)
    assert isinstance(refusal, Emit)
    assert "open transfers" in refusal.msg["err"]
    assert r.on_head("other", 5, [10], 0.0) == []  # the cap is per sender
    (refusal,) = r.on_head("s", 6, [-1], 0.0)
    assert isinstance(refusal, Emit)
    assert refusal.msg["err"]


def test_a_chunk_out_of_order_ends_the_stream_with_a_reason_for_the_sender() -> None:
    _msg, frames = big_message()
    s, r = StreamSender(CFG), StreamReceiver(CFG)
    head, _c0, c1, _c2 = s.open("r", frames, 0.0)
    assert isinstance(head, Emit)
    assert isinstance(c1, Emit)
    r.on_head("s", head.msg["x"], head.msg["sizes"], 0.0)
    (refusal,) = r.on_chunk("s", c1.msg["x"], c1.msg["o"], c1.msg["d"].buffers[0], 0.0)
    assert isinstance(refusal, Emit)
    assert "does not follow" in refusal.msg["err"]
    assert r.open_streams == 0
    (failed,) = s.on_ack("r", refusal.msg["x"], 0, refusal.msg["err"], 0.0)
    assert isinstance(failed, StreamFailed)
    assert "refused" in failed.reason


def test_a_stalled_stream_fails_on_both_sides_and_a_dead_peer_fails_at_once() -> None:
    _msg, frames = big_message()
    s, r = StreamSender(CFG), StreamReceiver(CFG)
    head = s.open("r", frames, 0.0, tag="a")[0]
    assert isinstance(head, Emit)
    r.on_head("s", head.msg["x"], head.msg["sizes"], 0.0)
    assert s.tick(CFG.stall_timeout - 0.1) == []
    (failed,) = s.tick(CFG.stall_timeout + 0.1)
    assert isinstance(failed, StreamFailed)
    assert failed.tag == "a"
    assert "no progress" in failed.reason
    r.tick(CFG.stall_timeout + 0.1)
    assert r.open_streams == 0
    assert r.dropped == 1
    s.open("r", frames, 10.0, tag="b")
    (gone,) = s.dest_gone("r", "node r is dead")
    assert isinstance(gone, StreamFailed)
    assert gone.tag == "b"
    assert gone.reason == "node r is dead"
    assert s.open_streams == 0


def test_acks_from_another_endpoint_or_beyond_what_was_sent_are_not_credit() -> None:
    _msg, frames = big_message()
    s = StreamSender(CFG)
    s.open("r", frames, 0.0)
    assert s.on_ack("intruder", 1, 256, None, 0.0) == []
    (failed,) = s.on_ack("r", 1, 10 * CFG.chunk * CFG.window, None, 0.0)
    assert isinstance(failed, StreamFailed)


@pytest.mark.parametrize("n", [1000, 1024, 4097])
def test_sizes_around_chunk_boundaries_round_trip(n: int) -> None:
    _msg, frames = big_message(n)
    s, r = StreamSender(CFG), StreamReceiver(CFG)
    delivered, outcomes, _ = deliver(s, r, s.open("r", frames, 0.0))
    (d,) = delivered
    assert isinstance(outcomes[0], StreamDone)
    out = decode(assemble(d.sizes, d.parts))
    assert bytes(memoryview(out["val"].buffers[0])) == bytes(np.arange(n, dtype=np.uint8))
