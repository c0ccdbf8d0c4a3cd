"""What code a node agrees to run, end to end on real node processes.

- Insecure node: importable functions and kernels only. A pickled function, a pickled argument, a pickled kernel
  are refused with a clear error, and the deny-list keeps the importable ways to run a string or a shell command
  out (each found by trying; each would have written the canary). Anyone on loopback can reach an insecure
  node, so these are sent by a raw NULL socket, as an attacker would.
- An HTTP POST forging ZMTP 1.0 frames (what a web page can send to 127.0.0.1) gets nothing.
- ``allowed_modules``: refs outside the list are refused, and so are pickled functions -- a pickle names no
  module that could be checked.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import zmq

from meshaios import TaskError
from meshaios.errors import SerializationError
from meshaios.testing.localmesh import LocalMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps
from tests.integration import funcs
from tests.security import canary
from tests.security.attacks import http_forged_submit
from tests.security.conftest import canary_path, node_view, wait_until

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def insecure() -> Any:
    with LocalMesh(1, insecure=True, discovery=False, extra_args=["--allow-module", "tests.security.canary"]) as mesh:
        yield mesh


def _spec(spec: dict[str, Any]) -> Payload:
    return dumps(spec, allow_pickle=False)[0]


def _args(*args: Any) -> Payload:
    return dumps([list(args), {}], allow_pickle=False)[0]


def raw_submit(
    sock: zmq.Socket[Any], tasks: list[tuple[Payload, Payload]], timeout: float = 20
) -> list[dict[str, Any]]:
    """Submit (fn, args) pairs as bare payloads; the results in order."""
    ids = [f"t{time.monotonic_ns()}x{i}" for i in range(len(tasks))]
    specs = [{"id": i, "fn": f, "args": a, "deps": []} for i, (f, a) in zip(ids, tasks, strict=True)]
    sock.send_multipart(encode({"t": M.SUBMIT, "tasks": specs}))
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(ids) and time.monotonic() < deadline:
        if sock.poll(100):
            msg = decode(sock.recv_multipart())
            if msg["t"] == M.RESULTS:
                got.update({r["id"]: r for r in msg["results"]})
    assert len(got) == len(ids), got
    return [got[i] for i in ids]


def null_dealer(ctx: zmq.Context[Any], mesh: LocalMesh) -> zmq.Socket[Any]:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(mesh.address(0))
    return s


def test_an_insecure_node_runs_importable_functions(
    insecure: LocalMesh, zctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Positive control for everything below: the canary does run when asked by name."""
    path = canary_path(tmp_path, "control")
    [r] = raw_submit(null_dealer(zctx, insecure), [(_spec({"ref": "tests.security.canary:touch"}), _args(str(path)))])
    assert r["ok"]
    assert path.exists()


def test_client_refuses_to_pickle_for_an_insecure_mesh(insecure: LocalMesh, tmp_path: Path) -> None:
    path = canary_path(tmp_path, "lambda")
    with insecure.client(0) as c:
        assert c.node["pickle"] is False
        with pytest.raises(SerializationError, match=r"insecure.*token"):
            c.submit(lambda: canary.touch(str(path)))
        with pytest.raises(SerializationError, match="insecure"):
            c.submit(funcs.identity, canary.Boom(str(path)))
    assert not path.exists()


def test_insecure_node_refuses_pickles_sent_by_hand(
    insecure: LocalMesh, zctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """What a client would never send, an attacker does: each comes back as an error naming the reason."""
    path = canary_path(tmp_path, "pickle")
    touch = _spec({"ref": "tests.security.canary:touch"})
    pickled_fn = _spec({"pickle": cloudpickle.dumps(lambda: canary.touch(str(path)))})
    pickled_kernel = _spec({"kernel": "evil.touch", "pickle": cloudpickle.dumps(lambda: canary.touch(str(path)))})
    pickled_arg = Payload(b"\x92\x91" + bytes(_ext_pickle(canary.Boom(str(path)))) + b"\x80")
    results = raw_submit(
        null_dealer(zctx, insecure),
        [(pickled_fn, _args()), (pickled_kernel, _args()), (touch, pickled_arg)],
    )
    whys = ["'<pickled function>' refused", "pickle is refused", "pickled value refused"]
    for r, why in zip(results, whys, strict=True):
        assert not r["ok"]
        assert r["err"]["type"] in ("meshaios.errors.WireError", "meshaios.errors.FunctionRefused")
        assert why in r["err"]["msg"]
        assert "not authenticated" in r["err"]["msg"]
    assert not path.exists()
    assert insecure.procs[0].alive()


def _ext_pickle(obj: Any) -> bytes:
    import msgpack

    from meshaios.wire.values import EXT_PICKLE

    return bytes(msgpack.packb(msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(obj))))


def _deny_cases(path: Path) -> list[tuple[str, tuple[Any, ...]]]:
    """(reference, arguments): each would write ``path`` if the node ran it."""
    p = str(path)
    cmd = f"touch {p}"
    code = f"open({p!r}, 'w').write('x')"
    return [
        ("os:system", (cmd,)),
        ("posix:system", (cmd,)),
        ("os:popen", (cmd,)),
        ("subprocess:getoutput", (cmd,)),
        ("builtins:eval", (code,)),
        ("builtins:exec", (code,)),
        ("builtins:open", (p, "w")),
        ("io:open", (p, "w")),
        ("codecs:open", (p, "w")),
        ("os:open", (p, 0o101)),  # O_WRONLY | O_CREAT
        ("timeit:timeit", (code,)),  # runs a statement given as a string
        ("cProfile:run", (code,)),
        ("profile:run", (code,)),
        ("pydoc:pipepager", ("x", cmd)),  # a shell command as the "pager"
        ("uuid:_get_command_stdout", ("touch", p)),
        ("platform:_syscmd_file", (p,)),
        ("numpy:savetxt", (p, [[1, 2]])),
        ("numpy:save", (p, [1, 2])),
        ("shutil:copyfile", ("/etc/hostname", p)),
        ("pickle:loads", (b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.",)),
        ("runpy:run_path", (p,)),
        ("importlib:import_module", ("os",)),
        ("logging.config:fileConfig", (p,)),
        ("sys:exit", (0,)),  # not the canary: would end a worker thread (or worse, the node)
        ("os:_exit", (0,)),
        ("signal:raise_signal", (9,)),
        ("_thread:interrupt_main", ()),
        ("tests.security.canary:__builtins__", ()),  # dunders lead anywhere
        ("json:codecs.open", (p, "w")),  # through a module attribute
    ]


def test_insecure_deny_list_end_to_end(insecure: LocalMesh, zctx: zmq.Context[Any], tmp_path: Path) -> None:
    path = canary_path(tmp_path, "deny")
    cases = _deny_cases(path)
    results = raw_submit(null_dealer(zctx, insecure), [(_spec({"ref": ref}), _args(*a)) for ref, a in cases])
    refused = {"meshaios.errors.FunctionRefused"}
    ran = [ref for (ref, _a), r in zip(cases, results, strict=True) if r["ok"] or r["err"]["type"] not in refused]
    assert ran == []
    assert not path.exists()
    assert insecure.procs[0].alive()
    with insecure.client(0) as c:  # and still serving
        assert c.submit(canary.noop, 5).result(timeout=10) == 5


def _read_until_closed(s: socket.socket) -> None:
    """Read what the node sends (its greeting) until it closes the connection."""
    with contextlib.suppress(ConnectionResetError):
        while s.recv(4096):
            pass


def test_http_post_forging_zmtp1_frames_gets_nothing(insecure: LocalMesh, tmp_path: Path) -> None:
    """A web page can POST any body to 127.0.0.1. Before ZAP ran on insecure nodes, libzmq took such a request
    for a ZMTP 1.0 peer: the headers parsed as junk frames, the body's sled lined the parser up, and the submit
    in it ran (numpy.savetxt wrote a file in the first demonstration). Now ZMTP 1.0/2.0 peers are refused."""
    path = canary_path(tmp_path, "http")
    port = int(insecure.address(0).rsplit(":", 1)[1])
    with insecure.client(0) as c:
        before = node_view(c)
        for parity in (0, 1):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(http_forged_submit(port, str(path), parity))
                _read_until_closed(s)  # the node refuses the peer and hangs up
        wait_until(
            lambda: node_view(c)["transport"]["auth_rejected"] - before["transport"]["auth_rejected"] >= 2,
            10,
            "both connections refused",
        )
        after = node_view(c)
    assert not path.exists()
    assert after["owner"]["submitted"] == before["owner"]["submitted"]
    assert after["counters"].get("bad_frames", 0) == before["counters"].get("bad_frames", 0)  # not even parsed
    assert after["transport"]["auth_rejected"] - before["transport"]["auth_rejected"] >= 2


# ---------------------------------------------------------------------------------------------- allowed_modules
@pytest.fixture(scope="module")
def fenced() -> Any:
    with LocalMesh(1, discovery=False, extra_args=["--allow-module", "tests.security.*"]) as mesh:
        yield mesh


def test_allowed_modules_admit_listed_refs_only(fenced: LocalMesh, tmp_path: Path) -> None:
    path = canary_path(tmp_path, "fenced")
    with fenced.client(0) as c:
        assert c.submit(canary.touch, str(path)).result(timeout=10) == str(path)
        with pytest.raises(TaskError, match="not allowed"):
            c.submit(funcs.square, 3).result(timeout=10)


def test_allowed_modules_refuse_pickled_functions(fenced: LocalMesh, tmp_path: Path) -> None:
    """A pickle is code that names no module we could check: with a module list, pickled functions go."""
    path = canary_path(tmp_path, "fenced-lambda")
    # the node's WELCOME says it takes no pickles, so the client refuses at once; a client that ignored that
    # would meet the node's own refusal (TaskError)
    with fenced.client(0) as c, pytest.raises((TaskError, SerializationError), match=r"pickle"):
        c.submit(lambda: canary.touch(str(path))).result(timeout=10)
    assert not path.exists()


def test_allowed_modules_refuse_pickled_arguments(fenced: LocalMesh, tmp_path: Path) -> None:
    path = canary_path(tmp_path, "fenced-arg")
    with fenced.client(0) as c, pytest.raises((TaskError, SerializationError)):
        c.submit(canary.noop, canary.Boom(str(path))).result(timeout=10)
    assert not path.exists()
