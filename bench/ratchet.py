"""1:1 messaging throughput: the raw Double Ratchet library against dsip's full path, one run.

Each operation is one message: encrypted by alice and decrypted by bob, in one chain
("one-way") or with the direction flipping every message ("ping-pong", a Diffie-Hellman
ratchet step per message). Rows:

* raw ``doubleratchet`` — the library's own objects held in memory, driven through its
  async API by an asyncio loop (how the library is meant to be used): the reference;
* ``SessionRecord`` — dsip's immutable sessions (state (de)serialized per message, as the
  store needs), no signing, no storage;
* full path — ``Messenger.send`` (load session from SQLite, encrypt, store, sign the
  envelope) + ``Verifier.verify`` (stages 1–14) + ``Messenger.receive`` (seen-id check,
  decrypt, inner schema, store session + inbox + seen id in one transaction), with the
  store at ``synchronous=FULL`` (the default: two fsyncs per message) and ``NORMAL``.

Usage: ``python bench/ratchet.py [--n 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from dsip.core.envelope import ReplayStore, Verifier
from dsip.core.identity import KeyPair
from dsip.messaging import ratchet as r
from dsip.messaging.messages import Messenger
from dsip.messaging.prekeys import verify_prekey_bundle
from dsip.messaging.session_store import SessionStore

NOW = 1_760_000_000
TEXT = "bench message of a typical chat length, about sixty bytes."


def rates(fns: dict[str, tuple[int, Callable[[], None]]], rounds: int) -> dict[str, float]:
    """Median messages/s per function; rounds interleaved so noise hits every row alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _, fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, (n, fn) in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in out.items()}


def raw_library(n: int, ping_pong: bool) -> Callable[[], None]:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    spk = r.generate_signed_prekey(bob, 1, now=NOW)
    shared, ad = bytes(32), b"ad"

    async def setup() -> tuple[Any, Any]:
        a, first = await r._DoubleRatchet.encrypt_initial_message(
            *r._DR_CONFIG, shared, spk.public, b"hi", ad
        )
        b, _ = await r._DoubleRatchet.decrypt_initial_message(
            *r._DR_CONFIG, shared, spk.private, first, ad
        )
        return a, b

    del alice
    a, b = asyncio.run(setup())
    payload = TEXT.encode()

    async def run() -> None:
        sender, receiver = a, b
        for _ in range(n):
            msg = await sender.encrypt_message(payload, ad)
            await receiver.decrypt_message(msg, ad)
            if ping_pong:
                sender, receiver = receiver, sender

    return lambda: asyncio.run(run())


def records(n: int, ping_pong: bool) -> Callable[[], None]:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    spk = r.generate_signed_prekey(bob, 1, now=NOW)
    remote = r.RemotePrekeys(
        bob.did, bob.public_key.public_bytes_raw(), 1, spk.public, spk.signature
    )
    pa = r.Peer(alice.did, bob.did, bob.did, bob.public_key.public_bytes_raw())
    pb = r.Peer(bob.did, alice.did, alice.did, alice.public_key.public_bytes_raw())
    session, first = r.initiate(alice, pa, remote, b"hi", b"aad", now=NOW)

    class Source:
        def signed_prekey(self, prekey_id: int) -> r.SignedPrekey | None:
            return spk

        def one_time_prekey(self, prekey_id: int) -> r.OneTimePrekey:
            raise AssertionError("not used")

    state = {
        "a": r.SessionRecord((session,)),
        "b": r.accept(None, first, b"aad", local=bob, peer=pb, prekeys=Source(), now=NOW).record,
    }
    payload = TEXT.encode()
    peers = {"a": (alice, pa), "b": (bob, pb)}

    def run() -> None:
        s, t = "a", "b"
        for _ in range(n):
            state[s], enc = state[s].encrypt(payload, b"aad")
            local, peer = peers[t]
            state[t] = r.accept(
                state[t], enc, b"aad", local=local, peer=peer, prekeys=Source(), now=NOW
            ).record
            if ping_pong:
                s, t = t, s

    return run


def full_path(
    n: int, ping_pong: bool, synchronous: Literal["FULL", "NORMAL"], tmp: Path
) -> Callable[[], None]:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    tag = f"{synchronous}-{ping_pong}"
    ma = Messenger(
        alice, SessionStore.open(tmp / f"a-{tag}.db", key=bytes(32), synchronous=synchronous)
    )
    mb = Messenger(
        bob, SessionStore.open(tmp / f"b-{tag}.db", key=bytes(32), synchronous=synchronous)
    )
    ma.learn(verify_prekey_bundle(mb.prekey_bundle(now=NOW, target=1), now=NOW), 1)
    mb.learn(verify_prekey_bundle(ma.prekey_bundle(now=NOW, target=1), now=NOW), 1)

    def run() -> None:
        # Verifier created per round; a real receiver keeps one (its duplicate-id store).
        verifier = Verifier(replay=ReplayStore(capacity=4 * n + 8))
        s, t = ma, mb
        for _ in range(n):
            sent = s.conversation(t.identity).send_text(TEXT, now=NOW)
            for out in sent.outbound:
                t.receive(verifier.verify(out.envelope, now=NOW), now=NOW)
            if ping_pong:
                s, t = t, s

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="messages per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fns: dict[str, tuple[int, Callable[[], None]]] = {}
        for mode, pp in (("one-way", False), ("ping-pong", True)):
            fns[f"raw {mode}"] = (n * 10, raw_library(n * 10, pp))
            fns[f"rec {mode}"] = (n * 4, records(n * 4, pp))
            fns[f"full-N {mode}"] = (n, full_path(n, pp, "NORMAL", tmp))
            fns[f"full-F {mode}"] = (n, full_path(n, pp, "FULL", tmp))
        res = rates(fns, rounds)
    print(f"1:1 messaging benchmark: {len(TEXT)}-byte text, median of {rounds} interleaved rounds")
    print(f"{'operation (encrypt + decrypt, per message)':<52} {'msg/s':>9}  ratio")
    print(f"{'-' * 52} {'-' * 9}  {'-' * 24}")
    for mode in ("one-way", "ping-pong"):
        ref = res[f"raw {mode}"]
        rows = [
            (f"raw doubleratchet ({mode})", ref, "reference"),
            (f"dsip SessionRecord ({mode})", res[f"rec {mode}"], None),
            (f"full path, SQLite NORMAL ({mode})", res[f"full-N {mode}"], None),
            (f"full path, SQLite FULL ({mode})", res[f"full-F {mode}"], None),
        ]
        for name, value, note in rows:
            print(f"{name:<52} {value:>9,.0f}  {note or f'{value / ref:.3f}x raw'}")


if __name__ == "__main__":
    main()
