"""Demo step: the presence DHT at scale, in simulation (issue 12; ``dsip.dht.sim``).

A 5,000-node run without churn and one with heavy churn, then one where a fifth of the
nodes are Sybils answering reads with forged presence records. Each finishes in seconds;
the checks are the properties ``docs/scale.md`` reports at 10⁴–10⁵ nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from dsip.dht.sim import SimConfig, SimResult, run
from dsip.services.localca import LocalCA

__all__ = ["demo_dhtsim"]


def _line(r: SimResult) -> str:
    return (
        f"hops p50 {r.hops_p50:.0f}, GET p50 {r.latency_p50 * 1000:.0f} ms / "
        f"p99 {r.latency_p99 * 1000:.0f} ms, found {r.success * 100:.1f}%, "
        f"bootstrap load {r.boot_rpc_per_s:.2f} RPC/s per node"
    )


async def demo_dhtsim(
    console: Console,
    ca: LocalCA,
    tmp: Path,
    expect: Callable[[bool, str], None],
) -> None:
    """Simulate the overlay: lookups, churn with republish, and forged answers rejected."""
    del ca, tmp  # a simulation: no certificates, nothing on disk
    console.print(
        "\n[bold]14. The DHT at scale (simulation)[/bold]: Kademlia k=20, alpha=10, read quorum 3, "
        "WAN latency model, signed presence records verified by storing nodes and readers"
    )
    still = await asyncio.to_thread(run, SimConfig(nodes=5_000, lookups=300, churn="none", joins=0))
    console.print(f"   5,000 nodes, no churn: {_line(still)}")
    expect(still.success == 1.0, "every lookup finds the signed record without churn")

    churn = await asyncio.to_thread(run, SimConfig(nodes=5_000, lookups=300, churn="heavy"))
    console.print(
        f"   heavy churn (median session 10 min): {_line(churn)}; live replicas before each "
        f"republish {'/'.join(f'{x:.1f}' for x in churn.replicas)}"
    )
    expect(min(churn.availability) > 0.95, "republish at TTL/2 keeps records available")

    sybil = await asyncio.to_thread(
        run, SimConfig(nodes=5_000, lookups=300, churn="none", joins=0, sybil=0.2)
    )
    console.print(
        f"   20% Sybils forging answers: {sybil.forged_rejected} forged values rejected "
        f"({', '.join(code for code, _ in sybil.rejected_codes)}), "
        f"{sybil.forged_accepted} accepted; found {sybil.success * 100:.1f}%"
    )
    expect(
        sybil.forged_rejected > 0 and sybil.forged_accepted == 0,
        "forged presence from Sybils never accepted",
    )
