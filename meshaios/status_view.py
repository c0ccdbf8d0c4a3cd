"""`meshaios status` as a person reads it: a table that fits the terminal (80 columns included).

Pure: takes the status dict a node returns (``Node.status``) and a width, returns a rich renderable. Columns are
dropped by priority when the terminal is too narrow, never squeezed to one letter; the mesh's totals (members by
state, running, queued, pending, done, failed, throughput) sit above the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_COLORS = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


@dataclass(frozen=True)
class Row:
    node: str
    name: str
    address: str
    state: str
    devices: str
    workers: int
    running: int
    queued: int
    done: int
    store: int
    up: float | None
    self_: bool


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # the widest cell we ever print in it (names are cut to this with an ellipsis)
    priority: int  # lower is dropped last
    right: bool

    def cell(self, row: Row) -> str:
        return _CELLS[self.title](row)


def _num(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _row(d: Mapping[str, Any], state: str, store: Any, self_: bool) -> Row:
    return Row(
        node=str(d["id"])[:8] + ("*" if self_ else ""),
        name=str(d.get("name", "")),
        address=str(d.get("addr", "")).split("://", 1)[-1],
        state=state,
        devices=str(d.get("devices") or "cpu"),
        workers=_num(d.get("workers")),
        running=_num(d.get("running")),
        queued=_num(d.get("queued")),
        done=_num(d.get("finished")),
        store=_num(store),
        up=_float(d.get("uptime")),
        self_=self_,
    )


def rows(data: Mapping[str, Any]) -> list[Row]:
    """The answering node first (its own figures), then the members it knows, by state and name."""
    me = data["node"]
    store = me.get("store") if isinstance(me.get("store"), dict) else {}
    out = [_row(me, "alive", store.get("bytes_in_memory"), True)]
    members = sorted(data.get("members", ()), key=lambda m: (m.get("state", ""), m.get("name", "")))
    out += [_row(m, str(m.get("state", "?")), m.get("store_bytes"), False) for m in members]
    return out


def human_bytes(n: Any) -> str:
    f = float(n or 0)
    for unit in ("B", "K", "M", "G"):
        if f < 1024 or unit == "G":
            return f"{f:.0f}{unit}" if unit == "B" or f >= 100 else f"{f:.1f}{unit}"
        f /= 1024
    return f"{f:.1f}T"


def human_count(n: int) -> str:
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M"


def human_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.0f}d"


_CELLS: dict[str, Callable[[Row], str]] = {
    "node": lambda r: r.node,
    "name": lambda r: r.name,
    "address": lambda r: r.address,
    "state": lambda r: r.state,
    "dev": lambda r: r.devices,
    "w": lambda r: str(r.workers),
    "run": lambda r: str(r.running),
    "queue": lambda r: human_count(r.queued),
    "done": lambda r: human_count(r.done),
    "store": lambda r: human_bytes(r.store),
    "up": lambda r: human_duration(r.up),
}

# Dropped from the end of this priority order when the terminal is narrow: who and whether it is alive first.
_PRIORITY = ("node", "state", "name", "run", "queue", "address", "store", "done", "w", "dev", "up")
_ORDER = ("node", "name", "address", "state", "dev", "w", "run", "queue", "done", "store", "up")
_NAME_MAX = 14
_ADDRESS_MAX = 21


def _columns(table_rows: Sequence[Row], width: int) -> list[Column]:
    widths: dict[str, int] = {}
    for title in _ORDER:
        cells = [len(_CELLS[title](r)) for r in table_rows]
        w = max([len(title), *cells])
        if title == "name":
            w = min(w, _NAME_MAX)
        elif title == "address":
            w = min(w, _ADDRESS_MAX)
        widths[title] = w
    keep = list(_PRIORITY)
    # no borders, no edge padding, one space of padding right of each cell: one space between columns
    while keep and sum(widths[t] for t in keep) + len(keep) - 1 > width:
        keep.pop()
    return [
        Column(t, widths[t], _PRIORITY.index(t), right=t in ("w", "run", "queue", "done", "store", "up"))
        for t in _ORDER
        if t in keep
    ]


def _mesh_line(data: Mapping[str, Any], table_rows: Sequence[Row]) -> str:
    me = data["node"]
    by_state: dict[str, int] = {}
    for r in table_rows:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    states = " ".join(f"{n} {s}" for s, n in sorted(by_state.items(), key=lambda kv: list(_COLORS).index(kv[0])
                                                     if kv[0] in _COLORS else 9))
    live = [r for r in table_rows if r.state in ("alive", "suspect")]
    running = sum(r.running for r in live)
    queued = sum(r.queued for r in live)
    done = sum(r.done for r in table_rows)
    pending = _num(me.get("pending")) + sum(_num(m.get("pending")) for m in data.get("members", ())
                                            if m.get("state") in ("alive", "suspect"))
    failed = _num(me.get("failed")) + sum(_num(m.get("failed")) for m in data.get("members", ()))
    rate = (_float(me.get("tasks_per_s")) or 0.0) + sum(
        _float(m.get("tasks_per_s")) or 0.0 for m in data.get("members", ()) if m.get("state") in ("alive", "suspect")
    )
    return (
        f"{states} | running {human_count(running)} queued {human_count(queued)} "
        f"pending {human_count(pending)} | done {human_count(done)} failed {human_count(failed)} "
        f"| {rate:.0f} tasks/s"
    )


def _gpu_lines(me: Mapping[str, Any]) -> list[str]:
    """The answering node's GPUs: what is kept on each, and the copies made to and from it."""
    gpus = me.get("gpu")
    if not isinstance(gpus, Mapping):
        return []
    out = []
    for dev, g in sorted(gpus.items()):
        if not isinstance(g, Mapping):
            continue
        out.append(
            f"{dev} kept {_num(g.get('resident_objects'))} {human_bytes(g.get('resident_bytes'))}/"
            f"{human_bytes(g.get('limit'))}, copies in {human_count(_num(g.get('h2d')))} "
            f"out {human_count(_num(g.get('d2h')))}, evicted {human_count(_num(g.get('evictions')))}"
        )
    return out


def render(data: Mapping[str, Any], width: int = 80, now: float | None = None) -> Group:
    """The status screen for a terminal ``width`` columns wide."""
    me = data["node"]
    table_rows = rows(data)
    cols = _columns(table_rows, width)
    stamp = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
    head = Text()
    head.append(f"mesh {str(me.get('mesh', ''))[:16]}", style="bold")
    head.append(f" seen by {str(me.get('name', ''))[:_NAME_MAX]} at {stamp}")
    if not me.get("secure"):
        head.append("  INSECURE", style="red")
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    for col in cols:
        table.add_column(
            col.title,
            justify="right" if col.right else "left",
            no_wrap=True,
            min_width=col.width,
            max_width=col.width,
            overflow="ellipsis",
        )
    for r in table_rows:
        cells = []
        for col in cols:
            text = col.cell(r)
            if col.title == "state":
                c = _COLORS.get(text, "white")
                cells.append(f"[{c}]{text}[/{c}]")
            else:
                cells.append(text.replace("[", r"\["))
        table.add_row(*cells)
    parts: list[Any] = [head, Text(_mesh_line(data, table_rows)), table]
    parts += [Text(line[:width]) for line in _gpu_lines(me)]
    dropped = [t for t in _ORDER if t not in {c.title for c in cols}]
    if dropped:
        parts.append(Text(f"(narrow terminal: {', '.join(dropped)} not shown)", style="dim"))
    if me.get("http"):
        parts.append(Text(f"dashboard: {me['http']}/ (on {str(me.get('name', ''))[:_NAME_MAX]}'s machine)",
                          style="dim"))
    return Group(*parts)
