"""Unauthenticated attackers against a node's port, usable in-process or as ``python -m tests.security.attacks``.

Each attempt is one fresh connection carrying a valid ``hello`` + ``submit`` of the canary task, so an attempt that
got through would be visible three ways: the task would be accepted (``owner.submitted``), run (the canary file),
and the transport would count a proven connection. Run as a separate process, the attacker does not share the GIL
with the test process that measures the legitimate client's latency.

Kinds:

- ``null``: a DEALER with the NULL mechanism (what an insecure client is);
- ``plain``: the PLAIN mechanism with a made-up user name and password;
- ``curve-unknown``: CURVE with a fresh key pair of its own and the node's correct public key;
- ``curve-wrong-server``: CURVE with a fresh key pair and a wrong server key;
- ``garbage``: raw TCP: random bytes, HTTP requests (one forging ZMTP 1.0 frames), hand-made ZMTP greetings.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from meshaios.wire.values import dumps

KINDS = ("null", "plain", "curve-unknown", "curve-wrong-server", "garbage")
# not an access attempt: an *authenticated* peer (it holds the token) spraying malformed frames
FLOOD = "flood"

_END = {
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "refused",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "refused",
    zmq.EVENT_DISCONNECTED: "refused",
}


def canary_submit(canary: str, task_id: str = "tcanary") -> list[bytes]:
    """A well-formed ``submit`` of ``canary.touch(canary)``: what an attacker who got in would send."""
    fn = dumps({"ref": "tests.security.canary:touch"}, allow_pickle=False)[0]
    args = dumps([[canary], {}], allow_pickle=False)[0]
    return [bytes(f) for f in encode({"t": M.SUBMIT, "tasks": [{"id": task_id, "fn": fn, "args": args, "deps": []}]})]


def _configure(sock: zmq.Socket[bytes], kind: str, server_public: bytes) -> None:
    if kind == "null":
        return
    if kind == "plain":
        sock.plain_username = b"admin"
        sock.plain_password = b"admin"
        return
    pub, sec = zmq.curve_keypair()
    sock.curve_publickey = pub
    sock.curve_secretkey = sec
    if kind == "curve-unknown":
        sock.curve_serverkey = server_public
    elif kind == "curve-wrong-server":
        sock.curve_serverkey = zmq.curve_keypair()[0]
    else:
        raise ValueError(kind)


def dealer_attempts(
    addr: str, kind: str, n: int, server_public: bytes, canary: str, batch: int = 100, timeout: float = 5.0
) -> Counter[str]:
    """``n`` connections of ``kind``, ``batch`` at a time; each waits for its own handshake's verdict."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 1 << 14)  # closed sockets are reaped lazily: leave room
    hello = [bytes(f) for f in encode({"t": M.HELLO, "client": "attacker"})]
    submit = canary_submit(canary)
    out: Counter[str] = Counter()
    try:
        done = 0
        while done < n:
            k = min(batch, n - done)
            socks, mons = [], []
            for _ in range(k):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RECONNECT_IVL, 600_000)  # one attempt per socket: no silent retries
                _configure(s, kind, server_public)
                mons.append(s.get_monitor_socket(sum(_END)))
                s.connect(addr)
                try:  # queued until a handshake that never completes
                    s.send_multipart(hello, zmq.NOBLOCK)
                    s.send_multipart(submit, zmq.NOBLOCK)
                except zmq.Again:  # no pipe yet: the attempt (the handshake) happens all the same
                    pass
                socks.append(s)
            poller = zmq.Poller()
            for m in mons:
                poller.register(m, zmq.POLLIN)
            verdict: dict[int, str] = {}
            deadline = time.monotonic() + timeout
            while len(verdict) < k and time.monotonic() < deadline:
                for m, _ev in poller.poll(100):
                    i = mons.index(m)
                    while True:
                        try:
                            ev = parse_monitor_message(m.recv_multipart(zmq.NOBLOCK))["event"]
                        except zmq.Again:
                            break
                        if ev in _END and i not in verdict:
                            verdict[i] = _END[ev]
            out.update(verdict.values())
            out["timeout"] += k - len(verdict)
            for s, m in zip(socks, mons, strict=True):
                s.disable_monitor()
                m.close(linger=0)
                s.close(linger=0)
            done += k
    finally:
        ctx.destroy(linger=0)
    return out


def _zmtp1(frames: list[bytes]) -> bytes:
    """ZMTP 1.0 framing: [length][flags][body], length counting the flags byte."""
    out = b""
    for i, f in enumerate(frames):
        size = len(f) + 1
        out += (bytes([size]) if size < 255 else b"\xff" + struct.pack(">Q", size)) + bytes([i < len(frames) - 1])
        out += f
    return out


def http_forged_submit(port: int, canary: str, parity: int) -> bytes:
    """An HTTP POST that a web page could send with ``fetch(..., {mode: "no-cors"})``: its body is a sled of
    empty ZMTP 1.0 frames and then a ``submit`` in ZMTP 1.0 framing. A node that accepts ZMTP 1.0 parses the
    headers as junk frames, lands in the sled, and runs the task (it did, before ZAP was enabled on insecure
    nodes). ``parity`` shifts the sled by a byte: one of the two lines up whatever the browser's headers were."""
    body = b"\x01" * (2000 + parity) + b"\x01\x00" + _zmtp1(canary_submit(canary, "thttp"))
    head = (
        f"POST /{'a' * 40} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
        f"Content-Length: {len(body)}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        "Content-Type: text/plain;charset=UTF-8\r\nAccept: */*\r\nOrigin: http://evil.example\r\n"
        "Sec-Fetch-Mode: no-cors\r\n\r\n"
    ).encode()
    return head + body


def _greeting(mechanism: bytes, major: int = 3) -> bytes:
    return b"\xff" + b"\0" * 8 + b"\x7f" + bytes([major, 0]) + mechanism.ljust(20, b"\0") + b"\0" + b"\0" * 31


def garbage_payloads(port: int, canary: str, rng: random.Random) -> list[bytes]:
    def zmtp3(f: bytes, more: bool) -> bytes:
        return bytes([more, len(f)]) + f if len(f) < 256 else bytes([2 | more]) + struct.pack(">Q", len(f)) + f

    frames = canary_submit(canary)
    null_submit = b"\x04\x1a\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER" + b"".join(
        zmtp3(f, i < len(frames) - 1) for i, f in enumerate(frames)
    )  # a NULL READY command, then the submit, in ZMTP 3 framing
    return [
        rng.randbytes(rng.randint(1, 2048)),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        http_forged_submit(port, canary, 0),
        http_forged_submit(port, canary, 1),
        _greeting(b"NULL") + null_submit,  # a hand-made NULL client, no libzmq involved
        _greeting(b"CURVE") + b"\x04" + bytes([200]) + b"\x05HELLO" + rng.randbytes(194),
        _greeting(b"PLAIN") + rng.randbytes(64),
        _greeting(b"NULL", major=2) + rng.randbytes(32),  # ZMTP 2.0
        b"\xff" + b"\0" * 8 + b"\x7f",  # a greeting cut short
        _greeting(b"CURVE") + b"\x06" + struct.pack(">Q", 1 << 40),  # a 1 TiB "command", then nothing
        b"",  # connect and hang up
        _zmtp1(canary_submit(canary, "tzmtp1")),  # a bare ZMTP 1.0 peer
    ]


def garbage_attempts(addr: str, n: int, canary: str, seed: int = 0, batch: int = 100) -> Counter[str]:
    host, _, port_s = addr.removeprefix("tcp://").rpartition(":")
    port = int(port_s)
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        conns = []
        payloads = garbage_payloads(port, canary, rng)
        for i in range(k):
            data = payloads[(done + i) % len(payloads)]
            s = socket.create_connection((host, port), timeout=5)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                out["sent"] += 1
            except OSError:
                out["reset"] += 1
            conns.append(s)
        time.sleep(0.05)  # let the node read what we sent before we hang up
        for s in conns:
            s.close()
        done += k
    return out


def malformed_flood(addr: str, n: int, token: str, idents: int = 4, timeout: float = 60.0) -> Counter[str]:
    """``n`` malformed messages from the corpus, round robin over ``idents`` authenticated connections (client
    routing ids, so the node answers each with an ``error``); the answers are read and counted as they come."""
    from meshaios.io.transport import apply_client_curve
    from meshaios.security import derive_keys
    from tests.security.malformed import corpus

    keys = derive_keys(token)
    frames = [f for _name, f in corpus()]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    out: Counter[str] = Counter()
    try:
        socks = []
        for i in range(idents):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, f"c:flood{i}".encode())
            s.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
            s.setsockopt(zmq.RCVHWM, 0)
            apply_client_curve(s, keys)
            s.connect(addr)
            socks.append(s)
        for k in range(n):
            s = socks[k % idents]
            s.send_multipart(frames[k % len(frames)], copy=False)
            out["sent"] += 1
            if k % 256 == 0:
                for r in socks:
                    out["errors_back"] += _drain_sync(r)
        deadline = time.monotonic() + 5
        while out["errors_back"] < out["sent"] and time.monotonic() < deadline:
            got = sum(_drain_sync(r) for r in socks)
            out["errors_back"] += got
            if not got:
                time.sleep(0.05)
    finally:
        ctx.destroy(linger=0)
    return out


def _drain_sync(sock: zmq.Socket[bytes]) -> int:
    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return n
        n += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=(*KINDS, FLOOD))
    p.add_argument("address")
    p.add_argument("n", type=int)
    p.add_argument("--server-key", default="", help="the node's CURVE public key (Z85)")
    p.add_argument("--canary", default="")
    p.add_argument("--token-file", default="", help="flood: the mesh token, to authenticate")
    p.add_argument("--idents", type=int, default=4, help="flood: connections (routing ids) to spread over")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.kind == FLOOD:
        with open(args.token_file) as fh:
            res = malformed_flood(args.address, args.n, fh.read().strip(), args.idents)
    elif args.kind == "garbage":
        res = garbage_attempts(args.address, args.n, args.canary)
    else:
        res = dealer_attempts(args.address, args.kind, args.n, args.server_key.encode(), args.canary)
    out: dict[str, Any] = dict(res)
    out["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
