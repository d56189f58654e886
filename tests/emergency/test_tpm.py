"""The device key in a software TPM 2.0 (swtpm): P-256 signatures, keystore "tpm"."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsip.core.emergency.certification import Level, issue_certification, verify_certification
from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.geo import Fix, attest, verify_attestation
from dsip.core.emergency.privacy import commit_regions, prove_region, verify_region_proof
from dsip.core.identity import KeyPair
from dsip.services.ports import free_port

pytestmark = pytest.mark.timeout(60)
NOW = int(time.time())


def _port_pair() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("swtpm")
    if binary is None:
        pytest.skip("swtpm not installed (Debian package swtpm)")
    pytest.importorskip("tpm2_pytss", reason="tpm2-pytss not installed (extra: tpm)")
    from dsip.agent.emergency import TpmKeyStore

    port = _port_pair()
    ctrl = port + 1  # the swtpm TCTI expects the control channel on the next port
    state = tmp_path / "tpm"
    state.mkdir()
    proc = subprocess.Popen(
        [binary, "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                store = TpmKeyStore(f"swtpm:host=127.0.0.1,port={port}")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield store
    finally:
        if store is not None:
            store.close()
        proc.terminate()
        proc.wait(5)


def test_tpm_signed_location_verifies_and_says_so(tpm: Any) -> None:
    caller = KeyPair.generate()
    assert tpm.did.startswith("did:key:zDn")  # P-256
    fix = Fix(42.746, -73.759, 5, "gps", NOW)
    rec = attest(fix, identity_key=caller, device=tpm, seq=1, now=NOW)
    loc = verify_attestation(rec, documents=None, now=NOW)
    assert (loc.keystore, loc.device) == ("tpm", tpm.did)
    rec["location"]["lat_e7"] += 1
    with pytest.raises(EmergencyError) as err:
        verify_attestation(rec, documents=None, now=NOW)
    assert err.value.reason == "x-emergency.location-forged"
    # the TPM key is the device a certifier vouches for
    certifier = KeyPair.generate()
    vc = issue_certification(certifier, tpm.did, Level.SILVER, now=NOW, keystore="tpm")
    cert = verify_certification(
        vc, documents=None, now=NOW, trusted_certifiers={certifier.did}, device=tpm.did
    )
    assert (cert.level, cert.keystore) == (Level.SILVER, "tpm")
    # and region commitments
    commitment, secrets_ = commit_regions(42.746, -73.759, device=tpm, now=NOW)
    assert verify_region_proof(prove_region(commitment, secrets_, 4), now=NOW) == ("dree", tpm.did)
