"""``dsip dht-node``: help, ready file, joining through --bootstrap, clean stop on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsip.core.identity import KeyPair
from dsip.dht import DhtClient, DhtNodeConfig, RecordKey
from dsip.dht.node import load_dht_config
from dsip.errors import ConfigError
from tests.dht.dhtfix import REPO, frame, spawn_node, wait_ready

pytestmark = [pytest.mark.timeout(60)]


def test_help_names_every_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dsip.cli.dht", "dht-node", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    for option in ("--listen", "--bootstrap", "--ready-file", "--config", "--identity-seed-file"):
        assert option in out


@pytest.mark.network
async def test_two_node_processes_store_what_a_client_publishes(tmp_path: Path) -> None:
    seed_file = tmp_path / "node0.seed"
    first = spawn_node(tmp_path, "node0", extra=["--identity-seed-file", str(seed_file)])
    second = None
    client = None
    try:
        await wait_ready([first])
        assert seed_file.stat().st_mode & 0o777 == 0o600
        second = spawn_node(tmp_path, "node1", [first.addr])
        await wait_ready([second])
        assert second.info["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
        client = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=(second.addr,)))
        alice = KeyPair.generate()
        assert await client.put(RecordKey.presence(alice.did), frame(alice)) == 2
        record = await client.resolve(alice.did)
        assert record is not None
        assert record.subject == alice.did
    finally:
        if client is not None:
            await client.close()
        for node in (first, second):
            if node is not None:
                node.proc.terminate()
                assert node.proc.wait(10) == 0  # SIGTERM: clean exit
    # the same seed file gives the same peer id
    again = spawn_node(tmp_path, "node0b", extra=["--identity-seed-file", str(seed_file)])
    try:
        await wait_ready([again])
        assert again.info["peer_id"] == first.info["peer_id"]
    finally:
        again.terminate()


def test_config_file_and_refusals(tmp_path: Path) -> None:
    cfg = tmp_path / "dht.toml"
    cfg.write_text(
        '[dht]\nlisten = "/ip4/127.0.0.1/tcp/4001"\n'
        'bootstrap = ["/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWRCrTvFB83mVswrs8fxZVpT37j6npbexqbr1n44FzCo3L"]\n'
        "replication = 10\n"
    )
    loaded = load_dht_config(cfg)
    assert loaded.listen.endswith("/4001")
    assert loaded.replication == 10
    assert len(loaded.bootstrap) == 1
    for bad in ('bootstrap = ["/ip4/1.2.3.4/tcp/1"]', "replication = 0", "nonsense = 1"):
        cfg.write_text(f"[dht]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_dht_config(cfg)
