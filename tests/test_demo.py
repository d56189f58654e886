"""`make demo` runs end to end: the accept, the three refusals, the relay call, the stored message."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from dsip.demo import run_foundation_demo


@pytest.mark.timeout(120)
async def test_demo_runs_every_flow(tmp_path: Path) -> None:
    console = Console(record=True, width=200, emoji=False, highlight=False)
    assert await run_foundation_demo(console, tmp_path) == 0
    out = console.export_text()
    assert "ACCEPT original invite" in out
    assert "signature-invalid → reason transport.routing-refused" in out
    assert "duplicate-id" in out
    assert "expired → reason session.expired" in out
    assert "signer-mismatch" in out
    assert "alice sees: progress ringing, answered by user" in out
    assert "bob's side ends with user.hangup" in out
    assert "the relay deleted its copy (0 left)" in out
    assert "presence:found" in out  # step 10: acct: alias → DID → DHT presence
    assert "region bucket u4pr lists 1 signed entry" in out
    assert "mallory's presence claiming carol's DID: signer-mismatch" in out
    # the wallet really is on disk, encrypted, and private
    ident = tmp_path / "wallet" / "identities" / "alice.json"
    assert ident.stat().st_mode & 0o777 == 0o600
    assert "demo passphrase" not in ident.read_text()
