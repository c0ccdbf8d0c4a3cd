"""Fuzz the frame decoder and the value decoder: ``meshaios.wire.codec.decode`` and ``meshaios.wire.values.loads``.

The property: whatever bytes arrive, the only exception either raises is ``WireError`` (the node answers those
and carries on), the process does not crash, and nothing is unpickled. One fuzz input becomes a multi-frame
message (``split_frames``); when the header decodes, every value inside is decoded too, and the frames are also
fed to ``loads`` directly as a value with buffers.

Run it (atheris is not a dependency of meshaios; install it where you fuzz)::

    .venv/bin/pip install atheris
    .venv/bin/python tools/fuzz/fuzz_decode.py -atheris_runs=2000000 fuzz-corpus/   # libFuzzer flags work
    .venv/bin/python tools/fuzz/fuzz_decode.py --make-corpus fuzz-corpus/            # seed it first

Without atheris, ``--replay N`` runs the seeds and N deterministic mutations of them (what CI runs, bounded:
``tests/security/test_fuzz_harness.py``).
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))  # the repository: meshaios, and tests.security's seed corpus

try:
    import atheris
except ImportError:  # replay mode only
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["meshaios", "msgpack"]):
        from meshaios.errors import WireError
        from meshaios.wire.codec import decode
        from meshaios.wire.payload import Payload
        from meshaios.wire.values import loads
else:
    from meshaios.errors import WireError
    from meshaios.wire.codec import decode
    from meshaios.wire.payload import Payload
    from meshaios.wire.values import loads

MAX_FRAMES = 4


def split_frames(data: bytes) -> list[bytes]:
    """Byte 0 picks 1..4 frames; each but the last is preceded by a 2-byte big-endian length (clipped to what
    is left); the last takes the rest. Total: every input is some message."""
    if not data:
        return [b""]
    n = 1 + data[0] % MAX_FRAMES
    pos = 1
    frames = []
    for _ in range(n - 1):
        if pos + 2 > len(data):
            break
        (size,) = struct.unpack_from(">H", data, pos)
        pos += 2
        frames.append(data[pos : pos + size])
        pos += size
    frames.append(data[pos:])
    return frames


def join_frames(frames: list[bytes]) -> bytes:
    """The inverse of ``split_frames`` (frames beyond 4, or longer than 64 KiB but the last, do not fit)."""
    frames = frames[:MAX_FRAMES]
    out = bytes([len(frames) - 1])
    for f in frames[:-1]:
        f = f[:0xFFFF]
        out += struct.pack(">H", len(f)) + f
    return out + frames[-1]


def _payloads(obj: Any, depth: int = 0) -> Iterator[Payload]:
    if depth > 32:
        return
    if isinstance(obj, Payload):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _payloads(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            yield from _payloads(v, depth + 1)


def one_input(data: bytes) -> None:
    frames = split_frames(data)
    try:
        msg = decode(frames)
    except WireError:
        msg = None
    if msg is not None:
        for p in _payloads(msg):
            try:
                loads(p, allow_pickle=False)
            except WireError:
                pass
    try:  # the frames as a value: blob plus buffers
        loads(Payload(frames[0], tuple(frames[1:])), allow_pickle=False)
    except WireError:
        pass


def TestOneInput(data: bytes) -> None:
    one_input(data)


def seeds() -> list[bytes]:
    """Well-formed messages of every type, and the malformed corpus of the security tests."""
    from meshaios.wire.codec import encode
    from tests.security.malformed import bad_values, corpus, valid_examples

    out = [join_frames([bytes(memoryview(f)) for f in encode(m)]) for m in valid_examples().values()]
    out += [join_frames(f) for _n, f in corpus() if len(f) <= MAX_FRAMES and sum(map(len, f)) < 1 << 16]
    out += [join_frames([p.blob, *map(bytes, p.buffers)]) for _n, p in bad_values()]
    return out


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """A few libFuzzer-like mutations: flip, set interesting bytes, insert, delete, truncate, splice."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC7, 0xD4, 0xDD, 0xDF, 0xFF])
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:
            at = rng.randrange(len(b))
            del b[at : at + rng.randint(1, 8)]
        elif op == 4 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 5:
            other = rng.choice(pool)
            at = rng.randrange(len(b) + 1)
            b[at:] = other[rng.randrange(len(other) + 1) :]
        elif op == 6 and len(b) > 4:  # a 32-bit length somewhere: huge
            at = rng.randrange(len(b) - 4)
            b[at : at + 4] = struct.pack(">I", rng.choice([0xFFFFFFFF, 1 << 20, 1 << 31]))
    return bytes(b)


def replay(n: int, seed: int = 0) -> int:
    """Seeds, then ``n`` mutations of them; returns how many inputs ran. Any exception but WireError escapes."""
    rng = random.Random(seed)
    pool = seeds()
    count = 0
    for s in pool:
        one_input(s)
        count += 1
    for _ in range(n):
        one_input(mutate(rng.choice(pool), rng, pool))
        count += 1
    return count


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--make-corpus":
        d = Path(sys.argv[2])
        d.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            (d / f"seed-{i:04d}").write_bytes(s)
        print(f"{len(seeds())} seeds written to {d}")
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "--replay":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
        print(f"{replay(n)} inputs, no crash")
        return
    if atheris is None:
        sys.exit("atheris is not installed: `pip install atheris`, or use --replay N")
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
