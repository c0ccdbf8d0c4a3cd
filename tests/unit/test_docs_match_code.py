"""The numbers the docs quote are the code's numbers, and protocol.md documents every message type.

Each ``Quote`` names a doc, a regular expression whose first group is a number as the doc writes it (``1,024``,
``0.5``, ``2^20``), the value in the code, and the unit the doc uses. Every quote must be found at least once
(deleting or rewording a sentence fails the test until its quote here is updated), and every place it is found
must agree with the code. Change a default, run this test, fix the docs it names.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshaios import client
from meshaios.config import DEFAULT_PORT, NodeConfig
from meshaios.dashboard.server import HttpLimits
from meshaios.devices import kernels
from meshaios.devices.resident import PINNED_MIN_BYTES
from meshaios.io import discovery
from meshaios.io.transport import ZmqOptions
from meshaios.logs import RateLimitedLog
from meshaios.membership import swim
from meshaios.membership.swim import SwimConfig
from meshaios.node import META_EVERY, MODELS_EVERY, PEEK_TIMEOUT, SAVE_MODEL_EVERY, TICK, VIEW_STALE
from meshaios.sched import sampling
from meshaios.sched.inputs import DEVICE_COPY_BW
from meshaios.security import TOKEN_BYTES
from meshaios.store import heap, shm
from meshaios.store.copies import COPY_CHECK_EVERY, FREE_HOLD, ORPHAN_GRACE, RESTATE_AFTER
from meshaios.store.fetch import MAX_TIMEOUTS
from meshaios.store.stream import StreamConfig
from meshaios.tasks import execcore
from meshaios.tasks.owner import OwnerConfig
from meshaios.testing.inproc import FAST_SWIM
from meshaios.wire import codec, messages, values
from meshaios.wire.codec import WireLimits
from meshaios.wire.guard import Throttle

ROOT = Path(__file__).resolve().parents[2]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MS = 1e-3

SWIM = SwimConfig()
NODE = NodeConfig()
OWNER = OwnerConfig()
LIMITS = WireLimits()
ZMQ = ZmqOptions()
STREAM = StreamConfig()
HTTP = HttpLimits()
GUARD = Throttle()  # as node.py makes it


def client_default(name: str) -> float:
    """A keyword default of ``AsyncClient`` (``heartbeat_timeout``, ``failover_timeout``, ...)."""
    default = inspect.signature(client.AsyncClient.__init__).parameters[name].default
    assert isinstance(default, int | float)
    return float(default)


def log_default(name: str) -> float:
    """A keyword default of ``logs.RateLimitedLog``, as the node makes it (``RateLimitedLog(log)``)."""
    default = inspect.signature(RateLimitedLog.__init__).parameters[name].default
    assert isinstance(default, int | float)
    return float(default)


def suspicion(n: int) -> float:
    """``Swim._suspicion_timeout`` for ``n`` members, at the default config."""
    return max(SWIM.suspicion_min, SWIM.suspicion_mult * SWIM.probe_interval * max(1.0, math.log10(n)))


@dataclass(frozen=True)
class Quote:
    doc: str
    pattern: str  # group 1: the number as written
    value: Callable[[], float]
    unit: float = 1.0  # the doc's number times this is the code's value

    @property
    def id(self) -> str:
        return f"{self.doc}: {self.pattern}"


DATA = "docs/dataplane.md"
SCHED = "docs/scheduling.md"
ARCH, PROTO, REL, SEC, README = (
    "docs/architecture.md", "docs/protocol.md", "docs/reliability.md", "docs/security.md", "README.md"
)
DEVICES = "docs/devices.md"
GUIDE = "docs/guide.md"
QUOTES = [
    # ---- put replicas and fetches under faults (issue 16's fault injection found these)
    Quote(DATA, r"`RESTATE_AFTER` \(([\d.]+) s\)", lambda: RESTATE_AFTER),
    Quote(DATA, r"`MAX_TIMEOUTS` \((\d+)\)", lambda: MAX_TIMEOUTS),
    Quote(DATA, r"no task for ([\d.]+) s \(`malloc_trim`", lambda: heap.IDLE_AFTER),
    Quote(DATA, r"`BLOCK_ROWS` rows \(([\d,]+);", lambda: kernels.BLOCK_ROWS),
    Quote(PROTO, r"`ORPHAN_GRACE` \(([\d.]+) s\)", lambda: ORPHAN_GRACE),
    Quote(REL, r"`COPY_CHECK_EVERY` \(([\d.]+) s\)", lambda: COPY_CHECK_EVERY),
    Quote(REL, r"`FREE_HOLD` \(([\d.]+) s\)", lambda: FREE_HOLD),
    # ---- the dashboard's mesh-wide view (Node.mesh_views)
    Quote(GUIDE, r"`PEEK_TIMEOUT` = ([\d.]+) s", lambda: PEEK_TIMEOUT),
    Quote(GUIDE, r"`VIEW_STALE` = ([\d.]+) s", lambda: VIEW_STALE),
    # ---- GPUs (devices/resident.py)
    Quote(DEVICES, r"`PINNED_MIN_BYTES` \(([\d.]+) MiB\)", lambda: PINNED_MIN_BYTES, MiB),
    Quote(DEVICES, r"`DEVICE_COPY_BW` \(([\d.]+) GB/s\)", lambda: DEVICE_COPY_BW, 1e9),
    Quote(SCHED, r"`DEVICE_COPY_BW` \(([\d.]+) GB/s", lambda: DEVICE_COPY_BW, 1e9),
    Quote(SCHED, r"`INLINE_USER_STREAK` = ([\d,]+) tiny runs", lambda: execcore.INLINE_USER_STREAK),
    Quote(SCHED, r"`INLINE_ABORT_S` = ([\d.]+) ms", lambda: execcore.INLINE_ABORT_S, MS),
    # ---- SWIM (membership/swim.py SwimConfig)
    Quote(ARCH, r"`probe_interval` \(([\d.]+) s\)", lambda: SWIM.probe_interval),
    Quote(ARCH, r"`probe_timeout` \(([\d.]+) s\)", lambda: SWIM.probe_timeout),
    Quote(ARCH, r"`k = (\d+)` random live members", lambda: SWIM.indirect_probes),
    Quote(ARCH, r"`nack` after ([\d.]+) x `probe_timeout`", lambda: SWIM.nack_fraction),
    Quote(ARCH, r"max\(([\d.]+) s, \d+ x", lambda: SWIM.suspicion_min),
    Quote(ARCH, r"max\([\d.]+ s, (\d+) x", lambda: SWIM.suspicion_mult),
    Quote(ARCH, r"max\([\d.]+ s, \d+ x ([\d.]+) s x", lambda: SWIM.probe_interval),
    Quote(ARCH, r"\(([\d.]+) s up to 10 nodes", lambda: suspicion(10)),
    Quote(ARCH, r"up to 10 nodes, ([\d.]+) s at 100\)", lambda: suspicion(100)),
    Quote(ARCH, r"`max_local_health - 1`, (\d+)\)", lambda: SWIM.max_local_health - 1),
    Quote(ARCH, r"up to (\d+) \(`max_gossip`\)", lambda: SWIM.max_gossip),
    Quote(ARCH, r"sent about `(\d+) x ceil\(log10\(n \+ 1\)\)`", lambda: SWIM.retransmit_mult),
    Quote(ARCH, r"to (\d+) random members every [\d.]+ s", lambda: SWIM.gossip_fanout),
    Quote(ARCH, r"random members every ([\d.]+) s", lambda: SWIM.gossip_interval),
    Quote(ARCH, r"one random member every (\d+) s", lambda: SWIM.sync_interval),
    Quote(ARCH, r"`rejoin_interval` \(([\d.]+) s\)", lambda: SWIM.rejoin_interval),
    Quote(ARCH, r"`dead_retention` \((\d+) s\)", lambda: SWIM.dead_retention),
    Quote(ARCH, r"forgotten after (\d+) s", lambda: SWIM.dead_retention),
    Quote(ARCH, r"profile about (\d+)x faster \(`FAST_SWIM`\)", lambda: SWIM.probe_interval / FAST_SWIM.probe_interval),
    Quote(PROTO, r"at most (\d+) per message \(`max_gossip`", lambda: SWIM.max_gossip),
    Quote(PROTO, r"reads at most (\d+), `4 x max_gossip`", lambda: 4 * SWIM.max_gossip),
    Quote(PROTO, r"\| (\d+), `4 x max_gossip`", lambda: 4 * SWIM.max_gossip),
    Quote(PROTO, r"every ([\d.]+) s to \d+ random members", lambda: SWIM.gossip_interval),
    Quote(PROTO, r"every [\d.]+ s to (\d+) random members", lambda: SWIM.gossip_fanout),
    Quote(PROTO, r"every (\d+) s with one random member", lambda: SWIM.sync_interval),
    Quote(PROTO, r"by ([\d.]+) x `probe_timeout`", lambda: SWIM.nack_fraction),
    Quote(PROTO, r"per `rejoin_interval` \(([\d.]+) s\) per peer", lambda: SWIM.rejoin_interval),
    Quote(PROTO, r"SWIM ids / addresses \| (\d+) / \d+ chars", lambda: swim.MAX_ID_LEN),
    Quote(PROTO, r"SWIM ids / addresses \| \d+ / (\d+) chars", lambda: swim.MAX_ADDR_LEN),
    Quote(PROTO, r"relays, contacts \| ([\d,]+) / [\d,]+ / [\d,]+", lambda: SWIM.max_members),
    Quote(PROTO, r"relays, contacts \| [\d,]+ / ([\d,]+) / [\d,]+", lambda: SWIM.max_relays),
    Quote(PROTO, r"relays, contacts \| [\d,]+ / [\d,]+ / ([\d,]+)", lambda: SWIM.max_contacts),
    Quote(REL, r"probe every ([\d.]+) s, ack timeout", lambda: SWIM.probe_interval),
    Quote(REL, r"ack timeout ([\d.]+) s", lambda: SWIM.probe_timeout),
    Quote(REL, r"(\d+) indirect probes", lambda: SWIM.indirect_probes),
    Quote(REL, r"`max\(([\d.]+) s, \d+ \u00d7 [\d.]+ s", lambda: SWIM.suspicion_min),
    Quote(REL, r"`max\([\d.]+ s, (\d+) \u00d7 [\d.]+ s", lambda: SWIM.suspicion_mult),
    Quote(REL, r"`max\([\d.]+ s, \d+ \u00d7 ([\d.]+) s", lambda: SWIM.probe_interval),
    Quote(REL, r"rejoin pings \(([\d.]+) s\)", lambda: SWIM.rejoin_interval),
    # ---- the node
    Quote(ARCH, r"(\d+) ms tick loop", lambda: TICK, MS),
    Quote(ARCH, r"`tick\(now\)` every (\d+) ms", lambda: TICK, MS),
    Quote(ARCH, r"\(`clock.Every`: meta every ([\d.]+) s", lambda: META_EVERY),
    Quote(ARCH, r"peers' models every ([\d.]+) s", lambda: MODELS_EVERY),
    Quote(ARCH, r"the model saved every (\d+) s\)", lambda: SAVE_MODEL_EVERY),
    Quote(ARCH, r"records live (\d+) s", lambda: discovery.DEFAULT_RECORD_TTL),
    Quote(ARCH, r"`meshaios init`, (\d+) random bytes", lambda: TOKEN_BYTES),
    Quote(PROTO, r"`meshaios init` writes (\d+) random bytes", lambda: TOKEN_BYTES),
    Quote(README, r"binds 0\.0\.0\.0:(\d+)", lambda: DEFAULT_PORT),
    Quote(README, r"default `0\.0\.0\.0:(\d+)`", lambda: DEFAULT_PORT),
    # ---- the owner
    Quote(ARCH, r"\((\d+) tasks in flight per worker slot", lambda: OWNER.window_per_slot),
    Quote(PROTO, r"tasks in flight per node, per owner \| (\d+) per worker slot", lambda: OWNER.window_per_slot),
    Quote(ARCH, r"`max_node_failures` \((\d+)\)", lambda: OWNER.max_node_failures),
    Quote(ARCH, r"max_node_failures \((\d+)\) times", lambda: OWNER.max_node_failures),
    Quote(PROTO, r"died more than (\d+) times", lambda: OWNER.max_node_failures),
    Quote(ARCH, r"travels inline \((\d+) KiB or less\)", lambda: NODE.inline_bytes, KiB),
    Quote(ARCH, r"A result over\s+(\d+) KiB stays", lambda: NODE.inline_bytes, KiB),
    Quote(README, r"Small results \(≤ (\d+) KiB\) travel inline", lambda: NODE.inline_bytes, KiB),
    Quote(SEC, r"fetches are capped at (\d+) MiB in flight", lambda: NODE.fetch_bytes_in_flight, MiB),
    # ---- the client (client.py)
    Quote(ARCH, r"at most ([\d,]+)\s+tasks\.", lambda: client.SUBMIT_BATCH),
    Quote(ARCH, r"batched, up to (\d+)\)", lambda: client.SUBMIT_BATCH),
    Quote(PROTO, r"A client sends at\s+most ([\d,]+) tasks per `submit`", lambda: client.SUBMIT_BATCH),
    Quote(PROTO, r"tasks per `submit` \| ([\d,]+)", lambda: client.SUBMIT_BATCH),
    Quote(PROTO, r"and about (\d+) MiB of header", lambda: client.SUBMIT_HEADER_BYTES, MiB),
    Quote(ARCH, r"pings each of its owners every ([\d.]+) s", lambda: client.PING_INTERVAL),
    Quote(ARCH, r"default `DEFAULT_SPREAD` \((\d+)\)", lambda: client.DEFAULT_SPREAD),
    Quote(PROTO, r"The client pings every ([\d.]+) s", lambda: client.PING_INTERVAL),
    Quote(REL, r"PING every ([\d.]+) s", lambda: client.PING_INTERVAL),
    Quote(REL, r"pings \(every ([\d.]+) s\)", lambda: client.PING_INTERVAL),
    Quote(ARCH, r"\(every (\d+) s\) asks for the live members", lambda: client.PING_INTERVAL * client.PEERS_EVERY),
    Quote(PROTO, r"Every eighth ping \(every (\d+) s\)", lambda: client.PING_INTERVAL * client.PEERS_EVERY),
    Quote(PROTO, r"Every (eighth) ping", lambda: client.PEERS_EVERY),
    Quote(ARCH, r"every (eighth) ping", lambda: client.PEERS_EVERY),
    Quote(REL, r"asked for every (\d+) s", lambda: client.PING_INTERVAL * client.PEERS_EVERY),
    Quote(ARCH, r"Every ([\d.]+) s the client checks for silence", lambda: client.PING_INTERVAL * client.WATCH_EVERY),
    Quote(ARCH, r"at most (\d+) s each to connect", lambda: client.FAILOVER_CONNECT_S),
    Quote(PROTO, r"at most (\d+) s each to connect", lambda: client.FAILOVER_CONNECT_S),
    Quote(ARCH, r"in rounds\s+([\d.]+) s apart", lambda: client.FAILOVER_ROUND_S),
    Quote(PROTO, r"rounds ([\d.]+) s apart", lambda: client.FAILOVER_ROUND_S),
    Quote(ARCH, r"`heartbeat_timeout` \((\d+) s\)", lambda: client_default("heartbeat_timeout")),
    Quote(PROTO, r"`heartbeat_timeout` \((\d+) s\)", lambda: client_default("heartbeat_timeout")),
    Quote(REL, r"`heartbeat_timeout` \((\d+) s", lambda: client_default("heartbeat_timeout")),
    Quote(ARCH, r"`failover_timeout` \((\d+) s\)", lambda: client_default("failover_timeout")),
    Quote(PROTO, r"`failover_timeout` \((\d+) s\)", lambda: client_default("failover_timeout")),
    Quote(REL, r"`failover_timeout` \((\d+) s\)", lambda: client_default("failover_timeout")),
    Quote(REL, r"`reconcile_after` \((\d+) s\)", lambda: client_default("reconcile_after")),
    Quote(PROTO, r"`connect_timeout`, (\d+) s", lambda: client_default("connect_timeout")),
    Quote(REL, r"stays open (\d+) s \(`RETIRED_CONNECTION_S`\)", lambda: client.RETIRED_CONNECTION_S),
    Quote(ARCH, r"client leases of (\d+) s", lambda: NODE.client_lease),
    Quote(PROTO, r"`client_lease`, (\d+) s", lambda: NODE.client_lease),
    Quote(REL, r"its (\d+) s `client_lease`", lambda: NODE.client_lease),
    Quote(REL, r"past its (\d+) s lease", lambda: NODE.client_lease),
    Quote(REL, r"one lease \((\d+) s;", lambda: NODE.client_lease),
    # ---- wire (wire/codec.py, wire/values.py, wire/messages.py, wire/guard.py)
    Quote(PROTO, r"`v` is the integer (\d+)", lambda: messages.PROTOCOL_VERSION),
    Quote(PROTO, r"`PROTOCOL_VERSION` = (\d+)", lambda: messages.PROTOCOL_VERSION),
    Quote(PROTO, r"extension \*\*type (\d+)\*\*", lambda: codec.EXT_PAYLOAD),
    Quote(PROTO, r"\| (\d+) \| array \|", lambda: values.EXT_ARRAY),
    Quote(PROTO, r"\| (\d+) \| tuple \|", lambda: values.EXT_TUPLE),
    Quote(PROTO, r"\| (\d+) \| set \|", lambda: values.EXT_SET),
    Quote(PROTO, r"\| (\d+) \| scalar \|", lambda: values.EXT_SCALAR),
    Quote(PROTO, r"\| (\d+) \| ref \|", lambda: values.EXT_REF),
    Quote(PROTO, r"\| (\d+) \| complex \|", lambda: values.EXT_COMPLEX),
    Quote(PROTO, r"\| (\d+) \| bigint \|", lambda: values.EXT_BIGINT),
    Quote(PROTO, r"\| (\d+) \| frozenset \|", lambda: values.EXT_FROZENSET),
    Quote(PROTO, r"\| (\d+) \| pickle \|", lambda: values.EXT_PICKLE),
    Quote(PROTO, r"header frame \| (\d+) MiB", lambda: LIMITS.max_header, MiB),
    Quote(PROTO, r"frames per message \| ([\d,]+)", lambda: LIMITS.max_frames),
    Quote(PROTO, r"array length in a header \| (2\^\d+)", lambda: LIMITS.max_items),
    Quote(PROTO, r"map size anywhere in a header \| ([\d,]+)", lambda: LIMITS.max_map_items),
    Quote(PROTO, r"fields of the header map \| (\d+)", lambda: LIMITS.max_fields),
    Quote(PROTO, r"\| (\d+) KiB \(`small_header`\)", lambda: LIMITS.small_header, KiB),
    Quote(PROTO, r"any header over (\d+) KiB must begin", lambda: LIMITS.small_header, KiB),
    Quote(PROTO, r"one frame \| (\d+) MiB", lambda: NODE.max_frame_bytes, MiB),
    Quote(PROTO, r"one frame \| (\d+) MiB", lambda: ZMQ.max_frame_bytes, MiB),
    Quote(PROTO, r"array rank \| (\d+) dimensions", lambda: values.MAX_NDIM),
    Quote(PROTO, r"list of at most (\d+) non-negative ints", lambda: values.MAX_NDIM),
    Quote(PROTO, r"nesting of a value \| (\d+) levels", lambda: values.MAX_DEPTH),
    Quote(PROTO, r"Values nest at most (\d+) levels", lambda: values.MAX_DEPTH),
    Quote(PROTO, r"task and object ids \| (\d+) characters", lambda: messages.MAX_ID),
    Quote(PROTO, r"tasks in one steal offer or commit \| (\d+)", lambda: messages.MAX_STEAL_BATCH),
    Quote(PROTO, r"path\]`, at most (\d+)", lambda: messages.MAX_STEAL_BATCH),
    Quote(PROTO, r"from one sender \| (\d+) in \d+ s", lambda: GUARD.strikes),
    Quote(PROTO, r"from one sender \| \d+ in (\d+) s", lambda: GUARD.window),
    Quote(PROTO, r"dropped unread for (\d+) s", lambda: GUARD.cooldown),
    Quote(PROTO, r"one warning per sender identity per (\d+) s", lambda: log_default("interval")),
    Quote(PROTO, r"at most (\d+) per \d+ s in all \(`logs.RateLimitedLog`\)", lambda: log_default("budget")),
    Quote(PROTO, r"at most \d+ per (\d+) s in all \(`logs.RateLimitedLog`\)", lambda: log_default("interval")),
    Quote(SEC, r"throttled: (\d+) within \d+ s", lambda: GUARD.strikes),
    Quote(SEC, r"throttled: \d+ within (\d+) s", lambda: GUARD.window),
    Quote(SEC, r"dropped unread for (\d+) s", lambda: GUARD.cooldown),
    Quote(SEC, r"the header's field count \(at most (\d+)\)", lambda: LIMITS.max_fields),
    Quote(SEC, r"its size \((\d+) KiB\)", lambda: LIMITS.small_header, KiB),
    Quote(SEC, r"a header over (\d+) KiB must start", lambda: LIMITS.small_header, KiB),
    Quote(SEC, r"maps anywhere at most ([\d,]+) entries", lambda: LIMITS.max_map_items),
    Quote(SEC, r"`max_header_bytes`, (\d+) MiB", lambda: NODE.max_header_bytes, MiB),
    Quote(SEC, r"dashboard: ([\d,]+) connections", lambda: HTTP.max_connections),
    Quote(SEC, r"dashboard: [\d,]+ connections; .*?; (\d+) s to send a request", lambda: HTTP.request_timeout),
    Quote(SEC, r"Fixed: ([\d,]+) connections, slow senders", lambda: HTTP.max_connections),
    Quote(SEC, r"(\d+) s per request\.", lambda: HTTP.request_timeout),
    # ---- sockets and streams (io/transport.py, io/discovery.py, store/stream.py)
    Quote(PROTO, r"SNDHWM = RCVHWM = ([\d,]+), `MAXMSGSIZE` = `max_frame_bytes`", lambda: ZMQ.hwm),
    Quote(PROTO, r"SNDHWM ([\d,]+), RCVHWM", lambda: ZMQ.hwm),
    Quote(PROTO, r"queued messages \| ([\d,]+) per node socket", lambda: ZMQ.hwm),
    Quote(SEC, r"`SNDHWM` = ([\d,]+) messages", lambda: ZMQ.hwm),
    Quote(SEC, r"the ROUTER queues ([\d,]+) messages", lambda: ZMQ.hwm),
    Quote(PROTO, r"`MAXMSGSIZE` (\d+) MiB \(nodes never receive", lambda: ZMQ.dealer_max_inbound, MiB),
    Quote(PROTO, r"accept at most (\d+) MiB frames", lambda: ZMQ.dealer_max_inbound, MiB),
    Quote(SEC, r"(\d+) MiB inbound frames", lambda: ZMQ.dealer_max_inbound, MiB),
    Quote(PROTO, r"handshakes time out after (\d+) s", lambda: ZMQ.handshake_ivl),
    Quote(SEC, r"`handshake_ivl` \((\d+) s", lambda: ZMQ.handshake_ivl),
    Quote(SEC, r"`handshake_ivl` \((\d+) s", lambda: NODE.handshake_ivl),
    Quote(PROTO, r"mDNS peers, resolutions in flight \| ([\d,]+) / \d+", lambda: discovery.MAX_PEERS),
    Quote(PROTO, r"mDNS peers, resolutions in flight \| [\d,]+ / (\d+)", lambda: discovery.MAX_RESOLVING),
    Quote(PROTO, r"\| (\d+) / \d+ bytes; \d+ chars", lambda: discovery._MAX_NAME_BYTES),
    Quote(PROTO, r"\| \d+ / (\d+) bytes; \d+ chars", lambda: discovery._MAX_DEV_BYTES),
    Quote(PROTO, r"\| \d+ / \d+ bytes; (\d+) chars", lambda: discovery._MAX_ID_BYTES),
    Quote(PROTO, r"A message of (\d+) MiB or more \(`StreamConfig.min_bytes`\)", lambda: STREAM.min_bytes, MiB),
    Quote(PROTO, r"a stream of\s+(\d+) MiB chunks", lambda: STREAM.chunk, MiB),
    Quote(PROTO, r"from (\d+) MiB \(`min_bytes`\)", lambda: STREAM.min_bytes, MiB),
    Quote(PROTO, r"in (\d+) MiB chunks \(`chunk`\)", lambda: STREAM.chunk, MiB),
    Quote(PROTO, r"(\d+) in flight \(`window`\)", lambda: STREAM.window),
    Quote(PROTO, r"at most (\d+) chunks of a stream unacknowledged", lambda: STREAM.window),
    Quote(PROTO, r"at most (\d+) TiB \(`max_bytes`\)", lambda: STREAM.max_bytes, 1 << 40),
    Quote(PROTO, r"(\d+) open streams per sender \(`max_incoming`\)", lambda: STREAM.max_incoming),
    Quote(PROTO, r"no progress for (\d+) s fails", lambda: STREAM.stall_timeout),
    # ---- same-host transfers (store/shm.py)
    Quote(DATA, r"hold at least (\d+) MiB \(`shm.MIN_BYTES`", lambda: shm.MIN_BYTES, MiB),
    Quote(PROTO, r"buffers hold at least (\d+) MiB comes as `shm", lambda: shm.MIN_BYTES, MiB),
    Quote(DATA, r"nobody claimed after (\d+) s \(`shm.CLAIM_TIMEOUT`\)", lambda: shm.CLAIM_TIMEOUT),
    Quote(DATA, r"at start and every (\d+) s\s+\(`shm.SWEEP_EVERY`\)", lambda: shm.SWEEP_EVERY),
    # ---- placement in a large mesh (sched/sampling.py)
    Quote(SCHED, r"`SCAN_BELOW` = (\d+) nodes", lambda: sampling.SCAN_BELOW),
    Quote(SCHED, r"`SAMPLE_D` = (\d+) random nodes", lambda: sampling.SAMPLE_D),
    Quote(SCHED, r"`MAX_HOLDERS` = (\d+) nodes", lambda: sampling.MAX_HOLDERS),
    Quote(SCHED, r"`GPU_SAMPLE` = (\d+) random nodes", lambda: sampling.GPU_SAMPLE),
    Quote(SCHED, r"every node up to (\d+), a sample above", lambda: sampling.SCAN_BELOW),
    Quote(SCHED, r"in a mesh of more than (\d+) nodes the owner hands", lambda: sampling.SCAN_BELOW),
]


def parse(text: str) -> float:
    words = {"eighth": 8}
    if text in words:
        return words[text]
    if "^" in text:
        base, exp = text.split("^")
        return float(int(base) ** int(exp))
    return float(text.replace(",", ""))


@functools.cache
def read(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def check(quote: Quote) -> list[str]:
    """What is wrong with one quote: not found, or found with another number than the code's."""
    text = read(quote.doc)
    matches = list(re.finditer(quote.pattern, text))
    if not matches:
        return [f"{quote.doc} no longer says /{quote.pattern}/: update the docs or this table"]
    code = float(quote.value())
    wrong = []
    for m in matches:
        written = m.group(1)
        if parse(written) * quote.unit != pytest.approx(code):
            line = text.count("\n", 0, m.start()) + 1
            wrong.append(f"{quote.doc}:{line} says {m.group(0)!r}, but the code has {code / quote.unit:g}")
    return wrong


def test_every_number_the_docs_quote_is_the_codes() -> None:
    """One test for the whole table (one line per problem), so that a changed default lists every stale place."""
    problems = [p for q in QUOTES for p in check(q)]
    assert not problems, "\n".join(problems)


# ---- message types ------------------------------------------------------------------------------------------------
def section(doc: str, start: str, end: str) -> str:
    text = read(doc)
    i = text.index(start)
    return text[i : text.index(end, i)]


def table_names(text: str, header: str = "") -> set[str]:
    """The first cell of every row that is a code span (``| `name` | ...``), in the tables whose header row begins
    with ``header``."""
    names: set[str] = set()
    for table in re.findall(r"(?:^\|.*\n)+", text, flags=re.MULTILINE):
        if table.startswith(header):
            rows = table.split("\n", 1)[1]
            names.update(re.findall(r"^\| `([a-z_]+)` \|", rows, flags=re.MULTILINE))
    return names


def test_protocol_md_documents_every_message_type_and_no_other() -> None:
    documented = table_names(section(PROTO, "## 4. Messages", "## 5. SWIM messages"), header="| `t` |")
    schemas = set(messages.SCHEMAS)
    assert not schemas - documented, f"types without a row in docs/protocol.md section 4: {schemas - documented}"
    assert not documented - schemas, f"docs/protocol.md section 4 documents unknown types: {documented - schemas}"


@pytest.mark.parametrize(
    ("start", "end", "definition"),
    [
        ("Run task (`RunTask`", "Result (`Result`)", messages.RunTask),
        ("Result (`Result`)", "### Client and node", messages.Result),
    ],
    ids=["run-task", "result"],
)
def test_protocol_md_field_tables_name_the_fields_of_their_definitions(start: str, end: str, definition: type) -> None:
    """A row may name several fields (`` `c`, `ep` ``); together the rows name exactly the TypedDict's fields."""
    rows = section(PROTO, start, end).splitlines()
    documented = {f for row in rows if row.startswith("| `") for f in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert documented == set(typing.get_type_hints(definition))


def test_protocol_md_documents_every_swim_kind() -> None:
    kinds_table = section(PROTO, "| kind | extra fields |", "Every other kind")
    assert table_names(kinds_table) == set(swim.KINDS)


def test_protocol_md_names_every_steal_kind() -> None:
    row = next(line for line in read(PROTO).splitlines() if line.startswith("| `steal` |"))
    named = set(re.findall(r"`(steal_[a-z]+)`", row))
    assert named == set(messages.STEAL_KINDS)


def test_protocol_md_lists_the_small_types() -> None:
    row = next(line for line in read(PROTO).splitlines() if "`SMALL_TYPES`" in line)
    listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    assert listed <= set(codec.SMALL_TYPES), f"not small: {listed - set(codec.SMALL_TYPES)}"
