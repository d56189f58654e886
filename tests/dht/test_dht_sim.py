"""The internet-scale DHT simulation (issue 12): routing, churn, republish, Sybil answers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest
from rich.console import Console

from dsip.dht.sim import DhtSim, SimConfig, SimResult, format_table, main, run
from dsip.dht.sim_demo import demo_dhtsim
from dsip.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

_STILL = {"churn": "none", "joins": 0}


def _figures(result: SimResult) -> dict[str, object]:
    figures = dataclasses.asdict(result)
    figures.pop("wall_s")
    return figures


def test_lookup_hops_grow_with_network_size() -> None:
    # Kademlia's O(log n): 8x the nodes costs more hops (k = 8 makes each hop count).
    small = run(SimConfig(nodes=1_000, lookups=120, k=8, bootstrap=2, **_STILL))
    large = run(SimConfig(nodes=8_000, lookups=120, k=8, bootstrap=2, **_STILL))
    assert small.mean_hops >= 1
    assert large.mean_hops > small.mean_hops + 0.3
    # ... but far fewer than log2(n): each hop halves the distance many times over
    assert large.hops_p95 <= 6


def test_without_churn_every_lookup_finds_the_signed_record() -> None:
    result = run(SimConfig(nodes=2_000, lookups=150, **_STILL))
    assert result.gets == 150
    assert result.success == 1.0
    assert result.availability == (1.0, 1.0, 1.0)
    # PUT reaches the k closest and every one of them stored (validated) the record
    assert result.replicas[0] == pytest.approx(20, abs=0.5)
    assert result.forged_rejected == 0
    # a lookup is a handful of WAN round trips, not timeouts
    assert 0.02 < result.latency_p50 < 1.5
    assert result.latency_p99 < 5.0


def test_sybil_forgery_is_rejected_by_the_reader() -> None:
    result = run(SimConfig(nodes=2_000, lookups=90, sybil=0.1, **_STILL))
    assert result.forged_seen > 0
    assert result.forged_rejected >= result.forged_seen
    # the attacker's record claims the DID but is signed by another key
    assert dict(result.rejected_codes).get("signer-mismatch", 0) == result.forged_seen
    assert result.forged_accepted == 0
    # Sybils can withhold (their answers fill the read quorum) but not forge
    assert result.success > 0.8


def test_mitigations_recover_reads_from_quorum_stuffing_but_not_from_an_eclipse() -> None:
    base = SimConfig(nodes=2_000, lookups=150, sybil=0.2, eclipse=5, **_STILL)
    plain = run(base)
    guarded = run(dataclasses.replace(base, quorum_valid=True, disjoint=3))
    assert plain.success < 0.9  # forged answers fill the quorum of 3
    assert guarded.success > plain.success + 0.05
    assert plain.forged_accepted == guarded.forged_accepted == 0
    # k Sybils closest to a key take every PUT and answer every read: nothing to verify
    assert plain.eclipsed_success == guarded.eclipsed_success == 0.0


def test_forged_value_is_refused_by_a_storing_node() -> None:
    sim = DhtSim(SimConfig(nodes=200, lookups=3, **_STILL))
    node = sim.first_regular + 1
    forged = sim._forged(0, sim._now(0.0))
    assert not sim._put_at(node, 0, forged, 1, 0.0)
    assert sim.store[0] == {}
    genuine = sim._sign(0, 1, 0.0)
    assert sim._put_at(node, 0, genuine, 1, 0.0)
    assert sim._held_value(node, 0, 1.0) == genuine


def test_churn_erodes_replicas_and_republish_restores_them() -> None:
    base = SimConfig(nodes=1_000, lookups=120, churn="heavy", joins=10)
    once = run(dataclasses.replace(base, republish=False))
    again = run(base)
    # without republish, churn takes replicas away and the record dies at its TTL
    assert once.replicas[1] < once.replicas[0] < 20
    assert once.availability[2] == 0.0
    assert once.replicas[2] == 0.0
    # republishing at TTL/2 puts a fresh record on the current k closest every interval
    assert again.availability[2] > 0.95
    assert again.replicas[2] > once.replicas[1]
    # churn brings joins, and every join asks each bootstrap node
    assert again.joins_per_s > 0
    assert again.boot_rpcs_per_join >= base.bootstrap


def test_same_seed_same_figures_other_seed_other_figures() -> None:
    config = SimConfig(nodes=800, lookups=60, churn="moderate", joins=5, seed=7)
    first, second = run(config), run(config)
    assert _figures(first) == _figures(second)
    other = run(dataclasses.replace(config, seed=8))
    assert _figures(other) != _figures(first)


@pytest.mark.parametrize(
    "bad",
    [
        {"nodes": 10},
        {"lookups": 0},
        {"churn": "storm"},
        {"ttl_s": 30},
        {"ttl_s": 301},
        {"alpha": 0},
        {"quorum": -1},
        {"rpc_timeout_s": 0},
        {"unreachable": 1.0},
        {"sybil": 0.5},
        {"bootstrap": 0},
        {"bootstrap": 21},
        {"connect_rtts": -1},
        {"disjoint": 0},
        {"disjoint": 21},
        {"eclipse": 2, "lookups": 3},
    ],
)
def test_bad_configuration_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**bad).validate()  # type: ignore[arg-type]


def test_cli_prints_one_table_row_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "300", "400", "--lookups", "30", "--churn", "none"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("| nodes | churn |")
    assert [line.split("|")[1].strip() for line in out[2:]] == ["300", "400"]
    assert main(["--nodes", "5", "--lookups", "30"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_table_is_markdown() -> None:
    result = run(SimConfig(nodes=300, lookups=30, **_STILL))
    table = format_table([result]).splitlines()
    assert len(table) == 3
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")


_DOC = Path(__file__).resolve().parents[2] / "docs" / "scale.md"
_CHECK = ["--nodes", "1000", "2000", "--lookups", "150", "--churn", "moderate", "--joins", "20"]


def test_docs_scale_table_is_what_the_simulator_prints(capsys: pytest.CaptureFixture[str]) -> None:
    # The page's check table is pasted output; a change to the model must regenerate it.
    doc = _DOC.read_text(encoding="utf-8")
    assert "python -m dsip.dht.sim " + " ".join(_CHECK) in doc
    assert main(_CHECK) == 0
    table = capsys.readouterr().out.strip()
    assert table in doc
    header = table.splitlines()[0]
    assert doc.count(header) == doc.count("| nodes | churn |") >= 10


def test_demo_step_passes_its_checks(tmp_path: Path) -> None:
    checks: list[tuple[bool, str]] = []
    console = Console(file=io.StringIO(), width=120)
    asyncio.run(
        demo_dhtsim(console, None, tmp_path, lambda ok, what: checks.append((ok, what)))  # type: ignore[arg-type]
    )
    assert len(checks) == 3
    assert all(ok for ok, _ in checks), checks
    assert "forged values rejected" in console.file.getvalue()  # type: ignore[attr-defined]
