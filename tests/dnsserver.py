"""A real authoritative DNS server for tests: NSD on 127.0.0.1, zones signed by ldns-signzone.

The fixture generates Ed25519 keys with ``ldns-keygen``, signs zones with ``ldns-signzone``
(an implementation independent of dnspython, which validates), and serves them with
``nsd`` in the foreground on a free loopback port (UDP and TCP). Zones:

``signed.test``      signed, valid, anchored by its DS       → secure
``plain.test``       unsigned, no anchor                      → insecure
``expired.test``     signed with signatures expired yesterday → bogus
``tampered.test``    signed, then the TXT value rewritten     → bogus (stale RRSIG)
``stripped.test``    unsigned, but a DS anchor exists for it  → bogus (signatures stripped)
``parent.test``      signed and anchored; delegates ``child.parent.test`` (signed, DS in the
                     parent → secure through the chain) and ``rogue.parent.test`` (signed
                     with a key the parent's DS does not name → bogus)

Test modules import ``dns_server_fixture`` and take a ``dns_server`` argument.
Skipped only when NSD or ldnsutils are not installed (``make test`` installs them from
``scripts/system-packages.txt``); a server that is installed but does not start fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

START_TIMEOUT_S = 15

# The DIDs the zones publish (syntax only matters: aliases resolve to DIDs, nothing fetches these).
ALICE = "did:web:voice.example:users:alice"
BOB_DNS = "did:web:voice.example:users:bob-per-dns"
CAROL_DNS = "did:web:voice.example:users:carol-per-dns"
MALLORY = "did:web:evil.example:users:mallory"
LONG_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


@dataclass(frozen=True)
class DnsServer:
    host: str
    port: int
    trust_anchors: str  # DS records in zone-file form, for AliasResolver(trust_anchors=...)
    directory: Path


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def _zone(origin: str, body: str) -> str:
    return (
        f"$ORIGIN {origin}.\n$TTL 300\n"
        f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n"
        f"@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{body}"
    )


class _Builder:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.now = int(time.time())

    def run(self, *args: str) -> str:
        done = subprocess.run(
            args, cwd=self.dir, check=True, capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    def keys(self, zone: str) -> tuple[str, str]:
        """(KSK, ZSK) base names for ``zone``."""
        ksk = self.run("ldns-keygen", "-a", "ED25519", "-k", zone)
        zsk = self.run("ldns-keygen", "-a", "ED25519", zone)
        return ksk, zsk

    def ds(self, ksk: str) -> str:
        return (self.dir / f"{ksk}.ds").read_text().split(";", 1)[0].strip()

    def write(self, zone: str, text: str) -> str:
        (self.dir / f"{zone}.zone").write_text(text)
        return f"{zone}.zone"

    def sign(self, zone: str, keys: tuple[str, str], *, inception: int, expiration: int) -> str:
        out = f"{zone}.signed"
        self.run(
            "ldns-signzone",
            "-o",
            f"{zone}.",
            "-i",
            str(inception),
            "-e",
            str(expiration),
            "-f",
            out,
            f"{zone}.zone",
            *keys,
        )
        return out


def build_zones(directory: Path) -> tuple[dict[str, str], str]:
    """Write and sign the test zones; (zone → file served, trust anchor text)."""
    b = _Builder(directory)
    valid = {"inception": b.now - 3600, "expiration": b.now + 30 * 86400}
    files: dict[str, str] = {}
    anchors: list[str] = []

    keys = b.keys("signed.test")
    b.write(
        "signed.test",
        _zone(
            "signed.test",
            f'_did.alice IN TXT "did={ALICE}"\n'
            f'_did.bob IN TXT "did={BOB_DNS}"\n'
            f'_did.multi IN TXT "did={ALICE}"\n_did.multi IN TXT "did={BOB_DNS}"\n'
            '_did.junk IN TXT "did=not a did"\n'
            f'_did.split IN TXT "did={LONG_DID[:20]}" "{LONG_DID[20:]}"\n'
            '_did.other IN TXT "v=spf1 -all"\n'
            "_did.cname IN CNAME _did.alice.signed.test.\n",
        ),
    )
    files["signed.test"] = b.sign("signed.test", keys, **valid)
    anchors.append(b.ds(keys[0]))

    files["plain.test"] = b.write(
        "plain.test",
        _zone(
            "plain.test", f'_did.alice IN TXT "did={ALICE}"\n_did.carol IN TXT "did={CAROL_DNS}"\n'
        ),
    )

    keys = b.keys("expired.test")
    b.write("expired.test", _zone("expired.test", f'_did.alice IN TXT "did={ALICE}"\n'))
    files["expired.test"] = b.sign(
        "expired.test", keys, inception=b.now - 30 * 86400, expiration=b.now - 86400
    )
    anchors.append(b.ds(keys[0]))

    keys = b.keys("tampered.test")
    b.write("tampered.test", _zone("tampered.test", f'_did.alice IN TXT "did={ALICE}"\n'))
    signed = b.sign("tampered.test", keys, **valid)
    path = directory / signed
    text = path.read_text()
    assert f'"did={ALICE}"' in text
    path.write_text(text.replace(f'"did={ALICE}"', f'"did={MALLORY}"'))
    files["tampered.test"] = signed
    anchors.append(b.ds(keys[0]))

    keys = b.keys("stripped.test")  # an anchor for a zone served without signatures
    files["stripped.test"] = b.write(
        "stripped.test", _zone("stripped.test", f'_did.alice IN TXT "did={MALLORY}"\n')
    )
    anchors.append(b.ds(keys[0]))

    child = b.keys("child.parent.test")
    b.write("child.parent.test", _zone("child.parent.test", f'_did.alice IN TXT "did={ALICE}"\n'))
    files["child.parent.test"] = b.sign("child.parent.test", child, **valid)
    rogue_named = b.keys("rogue.parent.test")  # the parent's DS names this key ...
    rogue_used = b.keys("rogue.parent.test")  # ... the zone is signed with this one
    b.write("rogue.parent.test", _zone("rogue.parent.test", f'_did.alice IN TXT "did={MALLORY}"\n'))
    files["rogue.parent.test"] = b.sign("rogue.parent.test", rogue_used, **valid)
    parent = b.keys("parent.test")
    b.write(
        "parent.test",
        _zone(
            "parent.test",
            "child IN NS ns.parent.test.\n"
            f"{b.ds(child[0])}\n"
            "rogue IN NS ns.parent.test.\n"
            f"{b.ds(rogue_named[0])}\n",
        ),
    )
    files["parent.test"] = b.sign("parent.test", parent, **valid)
    anchors.append(b.ds(parent[0]))
    return files, "\n".join(anchors) + "\n"


def _nsd_conf(directory: Path, port: int, files: dict[str, str]) -> Path:
    zones = "".join(f"zone:\n  name: {z}\n  zonefile: {f}\n" for z, f in files.items())
    conf = directory / "nsd.conf"
    conf.write_text(
        "server:\n"
        f"  ip-address: 127.0.0.1@{port}\n"
        "  do-ip6: no\n"
        '  username: ""\n'
        '  chroot: ""\n'
        f'  zonesdir: "{directory}"\n'
        '  database: ""\n'
        f'  zonelistfile: "{directory}/zone.list"\n'
        f'  xfrdfile: "{directory}/xfrd.state"\n'
        f'  xfrdir: "{directory}"\n'
        f'  pidfile: "{directory}/nsd.pid"\n'
        f'  logfile: "{directory}/nsd.log"\n'
        "  server-count: 1\n"
        "  hide-version: yes\n"
        "  verbosity: 1\n"
        "remote-control:\n"
        "  control-enable: no\n" + zones
    )
    return conf


def _answers(port: int, zone: str) -> bool:
    query = dns.message.make_query(f"{zone}.", "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.DNSException, OSError):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@pytest.fixture(scope="session", name="dns_server")
def dns_server_fixture() -> Iterator[DnsServer]:
    """NSD serving the test zones on 127.0.0.1:<free port>; stopped at the end of the session."""
    missing = [t for t in ("nsd", "ldns-keygen", "ldns-signzone") if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not found: install the Debian packages nsd and ldnsutils "
            "(make test does, from scripts/system-packages.txt)"
        )
    base = Path(tempfile.mkdtemp(prefix="dsip-dns-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        files, anchors = build_zones(base)
        port = _free_port()
        conf = _nsd_conf(base, port, files)
        check = subprocess.run(
            ["nsd-checkconf", str(conf)], capture_output=True, text=True, timeout=10, check=False
        )
        if check.returncode != 0:
            pytest.fail(f"nsd.conf rejected: {check.stderr}")
        proc = subprocess.Popen(
            ["nsd", "-d", "-c", str(conf)],
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(_answers(port, z) for z in files):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (base / "nsd.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"nsd is installed but did not serve the test zones:\n{log}")
            time.sleep(0.05)
        yield DnsServer("127.0.0.1", port, anchors, base)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            shutil.rmtree(base, ignore_errors=True)
