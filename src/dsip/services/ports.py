"""Picking a loopback port for a process we start ourselves (coturn, Janus, test relays).

The usual trick — bind port 0, read the number, close, hand it on — races: between the close
and the child's bind, the kernel may give the same number to any outgoing connection as its
ephemeral source port, and the child fails with EADDRINUSE. Here ports are drawn from below
the kernel's ephemeral range (``net.ipv4.ip_local_port_range``), which the kernel never
assigns on its own; only another explicit bind can take one, and numbers already handed out
by this process are not handed out again.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_LOW = 10_000  # below this, well-known and registered services are more common
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # the Linux default


def _binds(port: int, host: str, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, host: str = "127.0.0.1", tcp: bool = True, udp: bool = False) -> int:
    """A port on ``host`` that is free now for each protocol asked for (TCP by default)."""
    top = _ephemeral_start()
    candidates = range(_LOW, top) if top - _LOW >= 1_000 else range(0)
    for port in random.sample(candidates, min(len(candidates), 200)):
        if port in _handed_out:
            continue
        if tcp and not _binds(port, host, socket.SOCK_STREAM):
            continue
        if udp and not _binds(port, host, socket.SOCK_DGRAM):
            continue
        _handed_out.add(port)
        return port
    # no room below the ephemeral range: fall back to a kernel-chosen port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
