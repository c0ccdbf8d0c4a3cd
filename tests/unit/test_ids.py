"""Task and object ids: random, 96 bits in hex, drawn from the OS a batch at a time, never handed out twice."""

from __future__ import annotations

import os
import random
import re
import threading

from meshaios.ids import BATCH, new_id


def test_ids_are_96_random_bits_in_hex_after_their_prefix() -> None:
    ids = [new_id("t") for _ in range(5 * BATCH + 3)]  # across several draws
    assert all(re.fullmatch(r"t[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_draw_their_own_ids() -> None:
    out: list[list[str]] = []

    def draw() -> None:
        out.append([new_id() for _ in range(BATCH * 2)])

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in out for i in ids] + [new_id() for _ in range(BATCH)]
    assert len(set(every)) == len(every) == 9 * BATCH


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    new_id()  # this thread holds drawn ids now; a child forked here inherits them
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(w, new_id().encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read()
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{24}", child)
    assert child != new_id()  # without the reset on fork, both would pop the same last id


def test_an_rng_makes_ids_deterministic() -> None:
    assert new_id("o", random.Random(7)) == new_id("o", random.Random(7))
