"""free_port: numbers the kernel would not hand out as ephemeral ports, never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

from dsip.services.ports import free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)] + [free_port(udp=True) for _ in range(5)]
    assert len(set(ports)) == len(ports)
    assert all(p < start for p in ports)
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", ports[0]))
        udp.bind(("127.0.0.1", ports[-1]))
