"""`make demo`'s network part runs every flow on a fresh local network and shuts it down."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from dsip.demo_network import qr_text, run_network_demo, scan

pytestmark = [pytest.mark.network, pytest.mark.timeout(180)]


async def test_network_demo_runs_every_flow(tmp_path: Path) -> None:
    console = Console(record=True, width=200, emoji=False, highlight=False)
    assert await run_network_demo(console, tmp_path, stay_up=False) == 0
    out = console.export_text()
    assert "alice's camera reads: did:key:" in out
    assert "presence:found" in out
    assert "Alice Example — Verified by voice.net" in out
    assert "bob hears 1000 Hz, alice hears 1500 Hz" in out
    assert 'bob\'s phone wakes, connects, decrypts: "Dinner at eight?"' in out
    assert "refused policy.first-contact-required" in out
    assert "delivered; bob sees" in out
    assert "call taker sees:" in out  # the emergency call
    assert "device gold; verified" in out
    assert "use-native-dialer" in out
    assert "SHAKEN PASSporT verifies (attestation A" in out  # the gateway flow
    assert 'and a message goes through: "still there?"' in out
    assert "All flows behaved." in out


def test_the_qr_code_scans_back_and_a_damaged_one_does_not() -> None:
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    art, matrix = qr_text(did)
    assert "█" in art
    assert scan(matrix) == did
    broken = matrix.copy()
    broken[:, : broken.shape[1] // 2] = 0  # half the code gone
    with pytest.raises(Exception, match="did not scan"):
        scan(broken)
