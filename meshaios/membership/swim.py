"""SWIM membership and failure detection as a pure state machine.

Why a state machine without I/O: the very same code runs inside the asyncio node (over ZeroMQ) and inside the
discrete-event simulator (hundreds of nodes in one process), and its unit tests assert exact action lists without
a socket. So nothing here reads a clock, touches a socket or the global ``random``: time arrives as ``now``,
randomness from the injected ``random.Random``, and every decision leaves as an ``Action`` (a ``Send`` to
perform, or a ``MemberChanged`` to report).

The protocol is SWIM (Das, Gupta, Motivala 2002) with the cheap parts of Lifeguard (Dadgar et al. 2018) and
memberlist's defaults:

* Probing: one member per probe interval, in a shuffled round-robin order (bounded time to first detection,
  unlike uniform random picks); a direct ``ping``, then ``ping_req`` through ``k`` random peers, then suspicion.
* Suspicion with incarnation numbers: a suspected node refutes by raising its incarnation. Precedence between
  claims is one rule: the pair ``(incarnation, rank)`` with rank alive < suspect < dead < left wins.
* Lifeguard's local health multiplier: helpers answer a ``ping_req`` they could not complete with a ``nack``;
  a prober that misses expected nacks (or has its own liveness questioned) concludes that *it* is the slow one
  and stretches its probe interval, probe timeout and suspicion timeout, instead of accusing healthy peers.
* Dissemination: updates ride piggyback on every message, freshest and least-sent first, each sent about
  ``retransmit_mult * log10(n)`` times. While updates are pending they are also pushed to a few random members
  every ``gossip_interval`` (memberlist's gossip fan-out): piggybacking alone carries two messages per node per
  round, which makes a 200-node join take tens of seconds. A quiet mesh sends no such messages.
* Anti-entropy: a full-state ``sync`` when a node joins through us (its ``join`` ping), on contact with a member
  we consider dead (how healed partitions merge quickly), and with one random member every ``sync_interval``.
  Claims of death in a sync are downgraded to suspicion, as memberlist does, so that a stale view gives its
  subject time to refute.

Per-call cost does not grow with the mesh: picking probe and relay targets, the gossip queue, and all timers are
O(1) or O(log n) amortised; only ``members()``, ``alive_ids()``, ``leave()`` and the periodic ``sync`` touch
every member.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeAlias, TypedDict, TypeGuard, Unpack, cast

from meshaios.errors import ConfigError
from meshaios.wire.messages import NodeMeta, SwimKind, SwimMsg

__all__ = [
    "Action",
    "Member",
    "MemberChanged",
    "MemberState",
    "Send",
    "Swim",
    "SwimConfig",
]

# Limits on what a peer can make us store: an id or address longer than this is garbage, not a name.
MAX_ID_LEN = 256
MAX_ADDR_LEN = 512
MAX_INCARNATION = (1 << 63) - 1
MAX_SEQ = (1 << 63) - 1

KINDS = ("ping", "ack", "ping_req", "nack", "gossip", "sync", "leave")


@dataclass(frozen=True)
class SwimConfig:
    """Timing and fan-out of the protocol; the defaults follow memberlist's LAN profile at half its period.

    Every node of a mesh should use the same values: suspicion timeouts assume peers probe at the same rate.
    """

    probe_interval: float = 0.5  # one probe round per interval
    probe_timeout: float = 0.2  # wait for a direct ack before indirect probes
    indirect_probes: int = 3  # k
    # suspicion timeout = max(suspicion_min, suspicion_mult * probe_interval * max(1, log10(n)))
    suspicion_mult: float = 3.0
    suspicion_min: float = 1.5
    retransmit_mult: int = 4  # each update is piggybacked about retransmit_mult * ceil(log10(n + 1)) times
    max_gossip: int = 16  # updates per message at most
    rejoin_interval: float = 1.0  # ping one random DEAD (not LEFT) member this often, so healed partitions merge
    dead_retention: float = 120.0  # forget DEAD/LEFT members after this long
    # Additions beyond the brief (all have defaults, so positional construction above is unchanged):
    sync_interval: float = 30.0  # full-state push/pull with one random member (anti-entropy backstop)
    gossip_interval: float = 0.2  # while updates are pending, push them to gossip_fanout random members this often
    gossip_fanout: int = 3  # 0: piggyback on probe traffic only, as in the SWIM paper
    nack_fraction: float = 0.8  # a ping_req helper sends its nack after this fraction of probe_timeout
    max_local_health: int = 8  # Lifeguard: timeouts stretch up to this factor when we seem to be the slow one
    max_members: int = 100_000  # a peer gossiping more names than this is lying; ignore the surplus
    max_relays: int = 256  # ping_req we relay at once, at most
    max_contacts: int = 1024  # seeds and mDNS hints we keep retrying, at most

    def __post_init__(self) -> None:
        if not (0 < self.probe_timeout < self.probe_interval):
            raise ConfigError("swim: need 0 < probe_timeout < probe_interval")
        if self.indirect_probes < 0 or self.max_gossip < 1 or self.retransmit_mult < 1:
            raise ConfigError("swim: indirect_probes >= 0, max_gossip >= 1 and retransmit_mult >= 1 required")
        if self.suspicion_mult <= 0 or self.suspicion_min <= 0:
            raise ConfigError("swim: suspicion_mult and suspicion_min must be positive")
        if min(self.rejoin_interval, self.dead_retention, self.sync_interval, self.gossip_interval) <= 0:
            raise ConfigError("swim: rejoin, retention, sync and gossip intervals must be positive")
        if self.gossip_fanout < 0:
            raise ConfigError("swim: gossip_fanout must be >= 0")
        if not (0 < self.nack_fraction < 1) or self.max_local_health < 1:
            raise ConfigError("swim: need 0 < nack_fraction < 1 and max_local_health >= 1")
        if self.max_members < 1 or self.max_relays < 0 or self.max_contacts < 0:
            raise ConfigError("swim: max_members >= 1, max_relays >= 0, max_contacts >= 0 required")


class MemberState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# At equal incarnation a later verdict beats an earlier one; LEFT is final for its incarnation.
_RANK = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}
_BY_NAME = {s.value: s for s in MemberState}
_RANK_BY_NAME = {s.value: r for s, r in _RANK.items()}
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass
class Member:
    """What we believe about one peer. ``members()`` and ``get()`` hand out copies, so callers may keep them.

    ``last_heard`` is when a message came straight from it (``-inf`` if we only know it from gossip), and
    ``state_since`` when our view of it last changed state.
    """

    node_id: str
    addr: str
    state: MemberState
    incarnation: int
    meta: NodeMeta
    state_since: float
    last_heard: float


@dataclass(frozen=True)
class Send:
    """Send ``msg`` to the node at ``addr``. ``to`` is "" when only the address is known (a static seed)."""

    to: str
    addr: str
    msg: SwimMsg


@dataclass(frozen=True)
class MemberChanged:
    """A member was first seen (``old is None``) or changed state. The I/O layer and the scheduler react."""

    node_id: str
    addr: str
    old: MemberState | None
    new: MemberState
    meta: NodeMeta


Action: TypeAlias = Send | MemberChanged


# --------------------------------------------------------------------------------------------------------------
# Private helpers


class _IndexedSet:
    """Set with O(1) add, remove and uniform random pick: probe helpers and rejoin targets are drawn per round,
    and scanning every member to draw one would make a round cost O(n)."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._pos: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        i = self._pos.pop(item, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._pos[last] = i

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def choice(self, rng: random.Random) -> str:
        return self._items[rng.randrange(len(self._items))]

    def sample(self, rng: random.Random, k: int, accept: Callable[[str], bool] | None = None) -> list[str]:
        """Up to ``k`` distinct accepted items. Rejection sampling keeps it O(k) in a large set; a small one (or
        one where few are accepted) is scanned instead."""
        n = len(self._items)
        if n > 4 * k + 8:
            picked: list[str] = []
            for _ in range(8 * k + 8):
                x = self._items[rng.randrange(n)]
                if x not in picked and (accept is None or accept(x)):
                    picked.append(x)
                    if len(picked) == k:
                        return picked
        pool = [x for x in self._items if accept is None or accept(x)]
        return rng.sample(pool, min(k, len(pool)))


class _GossipQueue:
    """Pending updates, at most one per node, sent least-transmitted first and then newest first.

    A heap keyed by ``(transmits, -age)`` with lazy deletion (memberlist keeps a btree in the same order), so a
    message costs O(max_gossip log q) rather than a sort of the whole queue.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []  # (transmits, -put order, node id)
        self._entries: dict[str, tuple[int, int, list[Any]]] = {}  # node id -> (put order, transmits, update)
        self._order = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def put(self, node_id: str, update: list[Any]) -> None:
        self._order += 1
        self._entries[node_id] = (self._order, 0, update)
        heapq.heappush(self._heap, (0, -self._order, node_id))
        if len(self._heap) > 4 * len(self._entries) + 64:
            self._heap = [(t, -o, n) for n, (o, t, _) in self._entries.items()]
            heapq.heapify(self._heap)

    def drop(self, node_id: str) -> None:
        self._entries.pop(node_id, None)

    def take(self, limit: int, max_transmits: int) -> list[list[Any]]:
        out: list[list[Any]] = []
        again: list[tuple[int, int, str]] = []
        heap, entries = self._heap, self._entries
        while heap and len(out) < limit:
            t, neg_order, node_id = heapq.heappop(heap)
            e = entries.get(node_id)
            if e is None or e[0] != -neg_order or e[1] != t:
                continue  # superseded or dropped
            out.append(e[2])
            if t + 1 >= max_transmits:
                del entries[node_id]
            else:
                entries[node_id] = (e[0], t + 1, e[2])
                again.append((t + 1, neg_order, node_id))
        for item in again:
            heapq.heappush(heap, item)
        return out


@dataclass
class _Probe:
    target: str
    seq: int
    ack_deadline: float
    end: float
    acked: bool = False
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass
class _Relay:
    requester: str
    requester_addr: str
    req_seq: int
    target: str
    nack_at: float
    expire_at: float
    nacked: bool = False


@dataclass
class _Contact:
    """An address to keep pinging until SWIM knows who lives there: a static seed (``permanent``: pinged
    whenever nobody alive is known at it, so a mesh that forgot its other half still re-merges) or an mDNS
    hint (dropped once answered or after ``dead_retention``)."""

    addr: str
    node_id: str | None
    permanent: bool
    added: float
    last_seq: int = -1


@dataclass
class _Msg:
    kind: str
    seq: int
    sender: str
    addr: str
    inc: int
    meta: NodeMeta
    gossip: list[Any]
    to: str = ""
    target: str = ""
    target_addr: str = ""
    members: list[Any] = field(default_factory=list)
    reply: bool = False
    join: bool = False


class _Extra(TypedDict, total=False):
    """The fields of ``SwimMsg`` that only some kinds carry (``Swim._send``'s keywords)."""

    to: str
    join: bool
    target: str
    target_addr: str


def _is_id(x: object) -> TypeGuard[str]:
    return isinstance(x, str) and 0 < len(x) <= MAX_ID_LEN


def _is_addr(x: object) -> TypeGuard[str]:
    return isinstance(x, str) and 0 < len(x) <= MAX_ADDR_LEN


def _is_uint(x: object, limit: int) -> TypeGuard[int]:
    return type(x) is int and 0 <= x <= limit  # bool is not an int on this wire


def _parse(msg: object) -> _Msg | None:
    """Check a peer's message completely before anything acts on it, so bad input changes no state."""
    if not isinstance(msg, dict):
        return None
    kind = msg.get("k")
    if not isinstance(kind, str) or kind not in KINDS:
        return None
    seq, sender, addr, inc = msg.get("seq"), msg.get("from"), msg.get("addr"), msg.get("inc")
    if not _is_uint(seq, MAX_SEQ) or not _is_id(sender) or not _is_addr(addr) or not _is_uint(inc, MAX_INCARNATION):
        return None
    meta = msg.get("meta")
    if meta is None:
        meta = {}
    gossip = msg.get("gossip", [])
    if not isinstance(meta, dict) or not isinstance(gossip, list | tuple):
        return None
    # a map; its fields are read defensively by whoever reads them (a peer's ``w`` may be anything)
    out = _Msg(kind, seq, sender, addr, inc, cast(NodeMeta, meta), list(gossip))
    if kind == "ping":
        to, join = msg.get("to", ""), msg.get("join", False)
        if not isinstance(to, str) or not isinstance(join, bool):
            return None
        out.to, out.join = to, join
    elif kind == "ping_req":
        target, target_addr = msg.get("target"), msg.get("target_addr")
        if not _is_id(target) or not _is_addr(target_addr):
            return None
        out.target, out.target_addr = target, target_addr
    elif kind in ("ack", "nack"):
        target = msg.get("target", "" if kind == "ack" else None)
        if target == "":
            pass
        elif not _is_id(target):
            return None
        else:
            out.target = target
    elif kind == "sync":
        members, reply = msg.get("members"), msg.get("reply", False)
        if not isinstance(members, list | tuple) or not isinstance(reply, bool):
            return None
        out.members, out.reply = list(members), reply
    return out


def _parse_update(u: object) -> tuple[str, str, MemberState, int, NodeMeta | None] | None:
    """One gossip entry ``[node_id, addr, state, incarnation, meta]``; extra trailing fields are tolerated so
    that a later protocol version can add some."""
    if not isinstance(u, list | tuple) or len(u) < 5:
        return None
    node_id, addr, state, inc, meta = u[0], u[1], u[2], u[3], u[4]
    if not _is_id(node_id) or not _is_addr(addr) or not _is_uint(inc, MAX_INCARNATION):
        return None
    st = _BY_NAME.get(state) if isinstance(state, str) else None
    if st is None or not (meta is None or isinstance(meta, dict)):
        return None
    return node_id, addr, st, inc, cast(NodeMeta | None, meta)


def _update_of(m: Member) -> list[Any]:
    return [m.node_id, m.addr, m.state.value, m.incarnation, m.meta]


# --------------------------------------------------------------------------------------------------------------


class Swim:
    """One node's view of the mesh. Feed it ``discovered``/``handle``/``tick``; carry out what they return.

    ``tick(now)`` must be called at least as often as ``next_wakeup()`` asks (every 50-100 ms is fine; waking
    exactly at ``next_wakeup()`` is better, since Lifeguard nacks race against the probe deadline).
    """

    def __init__(
        self,
        node_id: str,
        addr: str,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not _is_id(node_id) or not _is_addr(addr):
            raise ConfigError("swim: node_id and addr must be non-empty strings of sane length")
        self.node_id = node_id
        self.addr = addr
        self.config = config
        self._rng = rng
        self._inc = 0
        self._meta: NodeMeta = cast(NodeMeta, dict(meta or {}))
        self._left = False
        self._members: dict[str, Member] = {}
        self._by_addr: dict[str, str] = {}
        self._live = _IndexedSet()  # ALIVE or SUSPECT
        self._dead = _IndexedSet()  # DEAD only: the rejoin candidates (LEFT said goodbye; no point)
        self._gossip = _GossipQueue()
        self._order: list[str] = []  # shuffled round-robin probe order
        self._order_pos = 0
        self._probe: _Probe | None = None
        # Start at a random phase so that nodes started together do not probe in lock-step.
        self._next_probe_at = now + rng.uniform(0.0, config.probe_interval)
        self._seq = rng.randrange(1 << 31)
        self._health = 0  # Lifeguard local health score, 0 .. max_local_health - 1
        self._suspicions: list[tuple[float, str, float]] = []  # heap of (deadline, node_id, state_since)
        self._forget: deque[tuple[float, str, float]] = deque()  # (when, node_id, state_since), time-ordered
        self._relays: dict[int, _Relay] = {}
        self._contacts: dict[str, _Contact] = {}
        self._contact_seqs: dict[int, str] = {}  # seq of the latest ping to each contact -> its address
        self._tell: dict[str, list[Any]] = {}  # node -> its own adverse state, to put first in our next message
        self._last_sync: dict[str, float] = {}
        self._next_rejoin_at = now + config.rejoin_interval
        self._next_sync_at = now + config.sync_interval * rng.uniform(0.5, 1.0)
        self._next_gossip_at = now

    # ---- read side ----------------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._inc

    @property
    def left(self) -> bool:
        """True after ``leave()``: the instance then ignores everything and sends nothing."""
        return self._left

    @property
    def local_health(self) -> int:
        """Lifeguard score: 0 is healthy; the probe interval and ack timeout are stretched by ``1 + score``."""
        return self._health

    @property
    def meta(self) -> NodeMeta:
        return self._meta

    def members(self) -> list[Member]:
        return [replace(m) for m in self._members.values()]

    def get(self, node_id: str) -> Member | None:
        m = self._members.get(node_id)
        return None if m is None else replace(m)

    def state_of(self, node_id: str) -> MemberState | None:
        """Like ``get(node_id).state`` without the copy: the simulator asks this n^2 times per check."""
        m = self._members.get(node_id)
        return None if m is None else m.state

    def alive_ids(self) -> list[str]:
        return list(self._live)

    def pending_gossip(self) -> int:
        """Updates still waiting to be piggybacked: 0 in a quiet mesh, a sign of churn otherwise."""
        return len(self._gossip)

    def next_wakeup(self) -> float:
        """The earliest ``now`` at which ``tick`` has something to do, so a driver can sleep until then instead
        of polling (the simulator does; the asyncio node may, or may just tick every 50-100 ms)."""
        if self._left:
            return math.inf
        p = self._probe
        if p is None:
            t = self._next_probe_at
        elif p.acked or p.indirect_sent:
            t = p.end
        else:
            t = min(p.ack_deadline, p.end)
        t = min(t, self._next_rejoin_at, self._next_sync_at)
        if self.config.gossip_fanout and len(self._gossip) and self._live:
            t = min(t, self._next_gossip_at)
        if self._suspicions:
            t = min(t, self._suspicions[0][0])
        if self._forget:
            t = min(t, self._forget[0][0])
        for r in self._relays.values():
            t = min(t, r.expire_at if r.nacked else r.nack_at)
        return t

    # ---- inputs -------------------------------------------------------------------------------------------

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        # Copied and replaced, never mutated in place, because the dict is shared with messages in flight.
        self._meta = cast(NodeMeta, dict(meta))

    def discovered(self, node_id: str | None, addr: str, now: float) -> list[Action]:
        """A hint that someone lives at ``addr`` (mDNS: id known; static seed: id None). We only ping: a
        member is added when it answers, so that a stale mDNS record never shows up as an ALIVE member."""
        if self._left or not _is_addr(addr) or addr == self.addr or node_id == self.node_id:
            return []
        if node_id is not None and not _is_id(node_id):
            return []
        if node_id is not None:
            m = self._members.get(node_id)
            if m is not None:
                # Known: a DEAD one being announced again is likely back; ping it so it learns to refute.
                return [self._ping(m.node_id, m.addr, now)] if m.state is MemberState.DEAD else []
        c = self._contacts.get(addr)
        if c is None:
            if len(self._contacts) >= self.config.max_contacts:
                return []
            c = _Contact(addr, node_id, permanent=node_id is None, added=now)
            self._contacts[addr] = c
        else:
            c.added = now
            c.permanent = c.permanent or node_id is None
            c.node_id = node_id or c.node_id
        return [self._ping_contact(c, now)]

    def handle(self, msg: object, now: float) -> list[Action]:
        """A message some other ``Swim`` put in ``Send.msg``. Malformed input is ignored, never raised on."""
        if self._left:
            return []
        m = _parse(msg)
        if m is None or m.sender == self.node_id:
            return []
        out: list[Action] = []
        if m.kind == "leave":
            # Not evidence of life: the sender's own LEFT update (in gossip) is the whole point.
            self._merge(m.gossip, now, out, from_sync=False)
            return out
        self._heard_from(m, now, out)
        self._merge(m.gossip, now, out, from_sync=False)
        if m.kind == "ping":
            out.append(self._send(m.sender, m.addr, "ack", m.seq))
            if m.join:
                self._maybe_sync(m.sender, m.addr, now, out, reply=True)
        elif m.kind == "ack":
            self._on_ack(m, now, out)
        elif m.kind == "ping_req":
            self._on_ping_req(m, now, out)
        elif m.kind == "nack":
            p = self._probe
            if p is not None and m.seq == p.seq and m.target == p.target:
                p.nacks = min(p.nacks + 1, p.expected_nacks)
        elif m.kind == "sync":
            self._merge(m.members, now, out, from_sync=True)
            if m.reply:
                self._maybe_sync(m.sender, m.addr, now, out, reply=False)
        return out

    def tick(self, now: float) -> list[Action]:
        """Fire whatever timers are due. Timers are deadlines compared with ``now``, not callbacks, so a late or
        early tick is harmless: it just acts late, or not yet."""
        if self._left:
            return []
        out: list[Action] = []
        self._expire_suspicions(now, out)
        self._drive_probe(now, out)
        self._drive_relays(now, out)
        self._drive_rejoin(now, out)
        self._drive_gossip(now, out)
        self._drive_sync(now, out)
        self._forget_old(now)
        return out

    def leave(self, now: float) -> list[Action]:
        """Say goodbye with LEFT at a higher incarnation, which beats every earlier claim about us: peers mark us
        LEFT (final) rather than suspecting us and waiting out a timeout. Peers that miss the message learn it
        from the others' gossip, or at worst detect us dead."""
        if self._left:
            return []
        self._inc += 1
        self._left = True
        self._probe = None
        self._relays.clear()
        update = [self.node_id, self.addr, MemberState.LEFT.value, self._inc, self._meta]
        out: list[Action] = []
        for node_id in self._live:
            m = self._members[node_id]
            msg = self._base("leave", self._next_seq())
            msg["gossip"] = [update]
            out.append(Send(m.node_id, m.addr, msg))
        return out

    # ---- message building ---------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 0
        return self._seq

    def _base(self, kind: SwimKind, seq: int) -> SwimMsg:
        return {
            "k": kind,
            "seq": seq,
            "from": self.node_id,
            "addr": self.addr,
            "inc": self._inc,
            "meta": self._meta,
            "gossip": [],
        }

    def _n(self) -> int:
        return len(self._live) + 1

    def _send(self, dest: str, addr: str, kind: SwimKind, seq: int, **extra: Unpack[_Extra]) -> Send:
        """Every message carries gossip. A peer we consider SUSPECT, DEAD or LEFT gets its own state first,
        since it alone can refute it, and a refutation is the cheapest way to stop a wrong verdict spreading."""
        msg: SwimMsg = {**self._base(kind, seq), **extra}
        first = self._tell.pop(dest, None)
        if first is None:
            m = self._members.get(dest)
            if m is not None and m.state is not MemberState.ALIVE:
                first = _update_of(m)
        n = self._n()
        budget = self.config.max_gossip - (first is not None)
        limit = self.config.retransmit_mult * math.ceil(math.log10(n + 1))
        gossip = self._gossip.take(budget, limit) if budget > 0 else []
        if first is not None:
            gossip.insert(0, first)
        msg["gossip"] = gossip
        return Send(dest, addr, msg)

    def _ping(self, to: str, addr: str, now: float, join: bool = False) -> Send:
        if join:
            return self._send(to, addr, "ping", self._next_seq(), to=to, join=True)
        return self._send(to, addr, "ping", self._next_seq(), to=to)

    def _ping_contact(self, c: _Contact, now: float) -> Send:
        """A ping flagged ``join``: whoever answers also sends us its full view, so one seed is enough."""
        s = self._ping(c.node_id or "", c.addr, now, join=True)
        self._contact_seqs.pop(c.last_seq, None)
        c.last_seq = s.msg["seq"]
        self._contact_seqs[c.last_seq] = c.addr
        return s

    def _self_update(self) -> list[Any]:
        return [self.node_id, self.addr, MemberState.ALIVE.value, self._inc, self._meta]

    def _sync_msg(self, to: str, addr: str, now: float, reply: bool) -> Send:
        members = [self._self_update()]
        members.extend(_update_of(m) for m in self._members.values())
        msg = self._base("sync", self._next_seq())
        msg["members"] = members
        msg["reply"] = reply
        first = self._tell.pop(to, None)
        if first is not None:
            msg["gossip"] = [first]
        return Send(to, addr, msg)

    def _maybe_sync(self, to: str, addr: str, now: float, out: list[Action], reply: bool) -> None:
        """Full-state exchange, at most once per ``rejoin_interval`` per peer: joins and partition merges
        would otherwise trade one sync per message until the views agree."""
        last = self._last_sync.get(to)
        if last is not None and now - last < self.config.rejoin_interval:
            return
        self._last_sync[to] = now
        out.append(self._sync_msg(to, addr, now, reply))

    # ---- state changes ------------------------------------------------------------------------------------

    def _suspicion_timeout(self) -> float:
        c = self.config
        # Not stretched by local health (Lifeguard scales only probing): a node cut off from most of the mesh
        # would otherwise take the health multiplier times longer to notice, keeping dead peers in its view.
        return max(c.suspicion_min, c.suspicion_mult * c.probe_interval * max(1.0, math.log10(self._n())))

    def _add(
        self,
        node_id: str,
        addr: str,
        state: MemberState,
        inc: int,
        meta: NodeMeta,
        now: float,
        out: list[Action],
        heard: bool,
    ) -> Member | None:
        if len(self._members) >= self.config.max_members:
            return None
        m = Member(node_id, addr, state, inc, meta, now, now if heard else -math.inf)
        self._members[node_id] = m
        self._by_addr[addr] = node_id
        self._live.add(node_id)
        # Paper: new members go to a random place in the rest of this round, so they are probed this round.
        self._order.insert(self._rng.randint(self._order_pos, len(self._order)), node_id)
        if state is MemberState.SUSPECT:
            heapq.heappush(self._suspicions, (now + self._suspicion_timeout(), node_id, now))
        self._gossip.put(node_id, _update_of(m))
        out.append(MemberChanged(node_id, addr, None, state, meta))
        return m

    def _set_addr(self, m: Member, addr: str) -> None:
        if addr != m.addr:
            if self._by_addr.get(m.addr) == m.node_id:
                del self._by_addr[m.addr]
            m.addr = addr
            self._by_addr[addr] = m.node_id

    def _transition(self, m: Member, new: MemberState, inc: int, now: float, out: list[Action]) -> None:
        old = m.state
        m.incarnation = inc
        if new is old:
            if new is MemberState.SUSPECT:  # suspected afresh at a higher incarnation: a new suspicion
                m.state_since = now
                heapq.heappush(self._suspicions, (now + self._suspicion_timeout(), m.node_id, now))
            return
        m.state = new
        m.state_since = now
        if new in _LIVE:
            if old not in _LIVE:
                self._live.add(m.node_id)
                self._dead.discard(m.node_id)
                self._order.insert(self._rng.randint(self._order_pos, len(self._order)), m.node_id)
            if new is MemberState.SUSPECT:
                heapq.heappush(self._suspicions, (now + self._suspicion_timeout(), m.node_id, now))
        else:
            self._live.discard(m.node_id)
            if new is MemberState.DEAD:
                self._dead.add(m.node_id)
            else:
                self._dead.discard(m.node_id)
            self._forget.append((now + self.config.dead_retention, m.node_id, now))
        out.append(MemberChanged(m.node_id, m.addr, old, new, m.meta))

    def _remove(self, node_id: str) -> None:
        m = self._members.pop(node_id)
        if self._by_addr.get(m.addr) == node_id:
            del self._by_addr[m.addr]
        self._live.discard(node_id)
        self._dead.discard(node_id)
        self._gossip.drop(node_id)
        self._tell.pop(node_id, None)
        self._last_sync.pop(node_id, None)

    def _heard_from(self, msg: _Msg, now: float, out: list[Action]) -> None:
        """A message straight from its sender is proof of life at the incarnation it carries: that clears our
        own suspicion, but cannot overrule DEAD or LEFT at the same incarnation (only the node itself can, by
        refuting with a higher one)."""
        sender, addr, inc = msg.sender, msg.addr, msg.inc
        self._contact_answered(self._contacts.get(addr), sender)
        if msg.kind == "ack":
            by_seq = self._contact_seqs.get(msg.seq)
            self._contact_answered(self._contacts.get(by_seq) if by_seq else None, sender)
        m = self._members.get(sender)
        if m is None:
            self._add(sender, addr, MemberState.ALIVE, inc, msg.meta, now, out, heard=True)
            return
        if m.state not in _LIVE:
            if inc > m.incarnation:
                m.meta, m.last_heard = msg.meta, now
                self._set_addr(m, addr)
                self._transition(m, MemberState.ALIVE, inc, now, out)
                self._gossip.put(sender, _update_of(m))
                self._maybe_sync(sender, addr, now, out, reply=True)
            else:
                # It does not know: tell it, so that it refutes if it is really back (a LEFT node that sends
                # anything has restarted). A DEAD one was likely cut off from us: merge our views too.
                self._tell[sender] = _update_of(m)
                if m.state is MemberState.DEAD:
                    self._maybe_sync(sender, addr, now, out, reply=True)
            return
        if inc < m.incarnation:
            return  # stale (reordered) message
        m.meta, m.last_heard = msg.meta, now
        self._set_addr(m, addr)
        if m.state is MemberState.SUSPECT:
            known = m.incarnation
            if inc == known:
                # Others still suspect it at this incarnation; only its refutation can convince them.
                self._tell[sender] = _update_of(m)
            self._transition(m, MemberState.ALIVE, inc, now, out)
            if inc > known:
                self._gossip.put(sender, _update_of(m))
        elif inc > m.incarnation:
            m.incarnation = inc
            self._gossip.put(sender, _update_of(m))

    def _contact_answered(self, c: _Contact | None, sender: str) -> None:
        """Learn who lives at a contact's address (a seed's id arrives with its first ack). An mDNS hint has
        done its job once answered; a static seed is kept for the day this node is cut off again."""
        if c is None:
            return
        c.node_id = sender
        if not c.permanent:
            self._drop_contact(c)

    def _drop_contact(self, c: _Contact) -> None:
        self._contacts.pop(c.addr, None)
        if self._contact_seqs.get(c.last_seq) == c.addr:
            del self._contact_seqs[c.last_seq]

    def _merge(self, updates: list[Any], now: float, out: list[Action], from_sync: bool) -> None:
        """Apply second-hand claims by the ``(incarnation, rank)`` rule; whatever changes our view is worth
        passing on, so it goes into our gossip queue (that is how an update spreads epidemically).

        A gossiped claim older than ours and of another state means some peer missed our news (say, a LEFT it
        is now suspecting, under heavy loss). Updates are only retransmitted a few times, so nothing else would
        ever repair that; we queue our version again, unless it is still queued anyway.
        """
        cap = self.config.max_members + 1 if from_sync else 4 * self.config.max_gossip
        members = self._members
        for raw in updates[:cap]:
            # Fast path: most updates repeat what we already know; skip those before validating in full (a sync
            # carries the whole mesh). Downgrading DEAD to SUSPECT only lowers a claim, so the skip stays valid.
            if type(raw) is list and len(raw) >= 5:
                known = members.get(raw[0]) if type(raw[0]) is str else None
                rank = _RANK_BY_NAME.get(raw[2]) if type(raw[2]) is str else None
                if (
                    known is not None
                    and rank is not None
                    and type(raw[3]) is int
                    and (raw[3], rank) <= (known.incarnation, _RANK[known.state])
                ):
                    if not from_sync and raw[2] != known.state.value and known.node_id not in self._gossip:
                        self._gossip.put(known.node_id, _update_of(known))
                    continue
            u = _parse_update(raw)
            if u is None:
                continue
            node_id, addr, state, inc, meta = u
            if node_id == self.node_id:
                self._about_self(state, inc)
                continue
            m = self._members.get(node_id)
            if m is None:
                if state in _LIVE:
                    self._add(node_id, addr, state, inc, meta if meta is not None else {}, now, out, heard=False)
                continue  # never heard of it and it is gone: nothing to remember
            if from_sync and state is MemberState.DEAD:
                if (
                    m.state is MemberState.ALIVE
                    and inc == m.incarnation
                    and now - m.last_heard < self._suspicion_timeout()
                ):
                    # We heard from it ourselves lately: the other view is stale (typically the far side of a
                    # healed partition). Pass the claim to its subject to refute instead of suspecting it here.
                    self._tell[node_id] = [node_id, m.addr, MemberState.SUSPECT.value, inc, m.meta]
                    continue
                state = MemberState.SUSPECT  # a stale view's verdict: give the subject time to refute
            if (inc, _RANK[state]) <= (m.incarnation, _RANK[m.state]):
                continue
            if state in _LIVE:
                self._set_addr(m, addr)
                if meta is not None:
                    m.meta = meta
            self._transition(m, state, inc, now, out)
            self._gossip.put(node_id, _update_of(m))

    def _about_self(self, state: MemberState, inc: int) -> None:
        if state is MemberState.ALIVE:
            # A previous life of this id got further than we have: continue from there.
            self._inc = max(self._inc, inc)
            return
        if inc < self._inc:
            return
        # Refute. Lifeguard: being suspected hints that *we* are slow to answer, so be slower to accuse.
        self._inc = inc + 1
        self._health = min(self._health + 1, self.config.max_local_health - 1)
        self._gossip.put(self.node_id, self._self_update())

    # ---- kinds --------------------------------------------------------------------------------------------

    def _on_ack(self, msg: _Msg, now: float, out: list[Action]) -> None:
        p = self._probe
        if p is not None and msg.seq == p.seq and p.target in (msg.sender, msg.target):
            if not p.acked:
                p.acked = True
                self._health = max(self._health - 1, 0)
            return
        r = self._relays.get(msg.seq)
        if r is not None and msg.sender == r.target:
            del self._relays[msg.seq]
            out.append(self._send(r.requester, r.requester_addr, "ack", r.req_seq, target=r.target))

    def _on_ping_req(self, msg: _Msg, now: float, out: list[Action]) -> None:
        if msg.target == self.node_id or len(self._relays) >= self.config.max_relays:
            return
        c = self.config
        ping = self._ping(msg.target, msg.target_addr, now)
        self._relays[ping.msg["seq"]] = _Relay(
            requester=msg.sender,
            requester_addr=msg.addr,
            req_seq=msg.seq,
            target=msg.target,
            nack_at=now + c.nack_fraction * c.probe_timeout,
            expire_at=now + c.probe_interval,
        )
        out.append(ping)

    # ---- timers -------------------------------------------------------------------------------------------

    def _expire_suspicions(self, now: float, out: list[Action]) -> None:
        while self._suspicions and self._suspicions[0][0] <= now:
            _, node_id, since = heapq.heappop(self._suspicions)
            m = self._members.get(node_id)
            if m is not None and m.state is MemberState.SUSPECT and m.state_since == since:
                self._transition(m, MemberState.DEAD, m.incarnation, now, out)
                self._gossip.put(node_id, _update_of(m))

    def _next_target(self) -> Member | None:
        for _ in range(2):
            while self._order_pos < len(self._order):
                node_id = self._order[self._order_pos]
                self._order_pos += 1
                m = self._members.get(node_id)
                if m is not None and m.state in _LIVE:
                    return m
            self._order = list(self._live)
            self._rng.shuffle(self._order)
            self._order_pos = 0
        return None

    def _drive_probe(self, now: float, out: list[Action]) -> None:
        p = self._probe
        if p is not None:
            if not p.acked and not p.indirect_sent and now >= p.ack_deadline:
                p.indirect_sent = True
                target = self._members.get(p.target)
                if target is not None and target.state in _LIVE:
                    # Only ALIVE helpers (as memberlist): a suspect one is likely unreachable, and its missing
                    # nack would count against our own health.
                    helpers = self._live.sample(self._rng, self.config.indirect_probes, self._good_helper(p.target))
                    p.expected_nacks = len(helpers)
                    for h in helpers:
                        hm = self._members[h]
                        out.append(self._send(h, hm.addr, "ping_req", p.seq, target=p.target, target_addr=target.addr))
            if now >= p.end:
                self._probe = None
                if not p.acked:
                    self._probe_failed(p, now, out)
        if self._probe is None and now >= self._next_probe_at:
            scale = 1 + self._health
            self._next_probe_at = now + self.config.probe_interval * scale
            m = self._next_target()
            if m is not None:
                s = self._ping(m.node_id, m.addr, now)
                self._probe = _Probe(
                    m.node_id, s.msg["seq"], now + self.config.probe_timeout * scale, self._next_probe_at
                )
                out.append(s)

    def _good_helper(self, target: str) -> Callable[[str], bool]:
        members = self._members

        def ok(node_id: str) -> bool:
            return node_id != target and members[node_id].state is MemberState.ALIVE

        return ok

    def _probe_failed(self, p: _Probe, now: float, out: list[Action]) -> None:
        # Lifeguard: helpers that could not reach the target either say so (nack); silence from them means our
        # own links are the problem. Without helpers we cannot tell, so count it against ourselves once.
        m = self._members.get(p.target)
        if m is None or m.state not in _LIVE:
            return  # declared gone by others meanwhile: not our fault, nothing to suspect
        missed = p.expected_nacks - p.nacks if p.expected_nacks else 1
        self._health = min(self._health + missed, self.config.max_local_health - 1)
        if m.state is MemberState.ALIVE:
            self._transition(m, MemberState.SUSPECT, m.incarnation, now, out)
            self._gossip.put(m.node_id, _update_of(m))

    def _drive_relays(self, now: float, out: list[Action]) -> None:
        if not self._relays:
            return
        for seq, r in list(self._relays.items()):
            if not r.nacked and now >= r.nack_at:
                r.nacked = True
                out.append(self._send(r.requester, r.requester_addr, "nack", r.req_seq, target=r.target))
            if now >= r.expire_at:
                del self._relays[seq]

    def _drive_rejoin(self, now: float, out: list[Action]) -> None:
        """Ping one random DEAD member and every unanswered contact: if a partition healed, the dead side's
        answer (and the sync it triggers) merges the two views without any operator action."""
        if now < self._next_rejoin_at:
            return
        self._next_rejoin_at = now + self.config.rejoin_interval
        if self._dead:
            m = self._members[self._dead.choice(self._rng)]
            out.append(self._ping(m.node_id, m.addr, now))
        for c in list(self._contacts.values()):
            if not c.permanent and now - c.added > self.config.dead_retention:
                self._drop_contact(c)
                continue
            known = self._members.get(c.node_id) if c.node_id else None
            if known is None:
                by_addr = self._by_addr.get(c.addr)
                known = self._members.get(by_addr) if by_addr else None
            if known is not None and known.state in _LIVE:
                continue
            out.append(self._ping_contact(c, now))

    def _drive_gossip(self, now: float, out: list[Action]) -> None:
        if now < self._next_gossip_at or not self.config.gossip_fanout or not len(self._gossip):
            return
        self._next_gossip_at = now + self.config.gossip_interval
        for node_id in self._live.sample(self._rng, self.config.gossip_fanout):
            m = self._members[node_id]
            out.append(self._send(node_id, m.addr, "gossip", self._next_seq()))

    def _drive_sync(self, now: float, out: list[Action]) -> None:
        if now < self._next_sync_at:
            return
        self._next_sync_at = now + self.config.sync_interval
        if self._live:
            m = self._members[self._live.choice(self._rng)]
            self._maybe_sync(m.node_id, m.addr, now, out, reply=True)

    def _forget_old(self, now: float) -> None:
        while self._forget and self._forget[0][0] <= now:
            _, node_id, since = self._forget.popleft()
            m = self._members.get(node_id)
            if m is not None and m.state not in _LIVE and m.state_since == since:
                self._remove(node_id)
