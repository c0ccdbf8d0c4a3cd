"""A LAN in miniature: network namespaces on a bridge, one mesh host per namespace (shared/netns.md, mode B).

Partitions are made by moving hosts' veth ends onto a second bridge, so a 2+2 split keeps each half connected
inside itself; healing moves them back. Everything created here has a unique name and is deleted in ``close``,
even when the test failed. Traffic stays inside these namespaces (10.77.x.y addresses exist only there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid

from meshaios.testing.managed import Managed


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class NetnsLan(Managed):
    def __init__(self, hosts: int, subnet: int | None = None) -> None:
        tag = uuid.uuid4().hex[:5]
        self.hosts = hosts
        self.subnet = subnet if subnet is not None else 77 + int(tag, 16) % 150
        self.bridge = f"mb{tag}"
        self.bridge2 = f"mc{tag}"
        self.ns = [f"mesh{tag}{i}" for i in range(1, hosts + 1)]
        self.veth = [f"mv{tag}{i}" for i in range(1, hosts + 1)]
        self.created: list[tuple[str, str]] = []

    def ip_of(self, host: int) -> str:
        return f"10.{self.subnet}.0.{host + 1}"

    def start(self) -> None:
        for br in (self.bridge, self.bridge2):
            _ip("link", "add", br, "type", "bridge")
            self.created.append(("link", br))
            _ip("link", "set", br, "type", "bridge", "mcast_snooping", "0")
            _ip("link", "set", br, "up")
        for i, (ns, veth) in enumerate(zip(self.ns, self.veth, strict=True)):
            _ip("netns", "add", ns)
            self.created.append(("netns", ns))
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.created.append(("link", veth))
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def prefix(self, host: int) -> list[str]:
        """Prepend to a command to run it on ``host``."""
        return ["ip", "netns", "exec", self.ns[host]]

    def partition(self, side: list[int]) -> None:
        """Hosts in ``side`` can reach each other but nobody else."""
        for h in side:
            _ip("link", "set", self.veth[h], "master", self.bridge2)

    def heal(self) -> None:
        for v in self.veth:
            _ip("link", "set", v, "master", self.bridge)

    def close(self) -> None:
        for kind, name in reversed(self.created):
            with contextlib.suppress(Exception):
                if kind == "netns":
                    _ip("netns", "del", name, check=False)
                else:
                    _ip("link", "del", name, check=False)
        self.created.clear()
