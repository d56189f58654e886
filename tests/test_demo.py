"""`make demo` (the foundation demo) runs end to end and shows the accept and the three refusals."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from dsip.demo import run_foundation_demo


async def test_foundation_demo_accepts_the_invite_and_refuses_the_attacks(tmp_path: Path) -> None:
    console = Console(record=True, width=200, emoji=False, highlight=False)
    assert await run_foundation_demo(console, tmp_path) == 0
    out = console.export_text()
    assert "ACCEPT original invite" in out
    assert "signature-invalid → reason transport.routing-refused" in out
    assert "duplicate-id" in out
    assert "expired → reason session.expired" in out
    assert "signer-mismatch" in out
    # the wallet really is on disk, encrypted, and private
    ident = tmp_path / "wallet" / "identities" / "alice.json"
    assert ident.stat().st_mode & 0o777 == 0o600
    assert "demo passphrase" not in ident.read_text()
