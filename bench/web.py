"""Browser-client envelope speed: the JavaScript pipeline in headless Chromium against raw
WebCrypto Ed25519 in the same page, and against the Python pipeline, in one run.

Rows (operations per second, median of interleaved rounds):

* ``signEnvelope`` (payload serialization, base64url, WebCrypto sign) vs raw WebCrypto sign
  of the same signing input — what the browser's envelope code costs over the primitive;
* ``verifyFrame`` (size cap, strict JSON incl. the duplicate-name/float scan, header, did:key
  resolution and key import, signature, payload rules, replay window, duplicate store) vs raw
  WebCrypto verify with an already-imported key;
* ``verifyFrame`` vs the Python ``Verifier.verify`` (stages 1–14) on the same frames.

Needs the Debian ``chromium`` package and ``playwright`` (test extra).
Usage: ``python bench/web.py [--n 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dsip.config import RelayConfig
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.services.webroot import default_web_root
from dsip.storage import open_store

_JS = """async ([n, rounds, frames, now]) => {
  const c = await import('/js/codec.js');
  const e = await import('/js/envelope.js');
  const id = await e.Identity.generate();
  const payload = e.makePayload('bye', {from: id.did, to: id.did,
    session: '01AAAAAAAAAAAAAAAAAAAAAAAA', reason: 'user.hangup'});
  const env = await e.signEnvelope(payload, id);
  const input = c.utf8.encode(env.protected + '.' + env.payload);
  const sig = c.b64urlDecode(env.signature);
  const time = async (fn) => { const t0 = performance.now(); await fn(); return n / ((performance.now() - t0) / 1000); };
  const runs = {sign: [], rawSign: [], verify: [], rawVerify: []};
  const fns = {
    sign: async () => { for (let i = 0; i < n; i++) await e.signEnvelope(payload, id); },
    rawSign: async () => { for (let i = 0; i < n; i++) await id.sign(input); },
    verify: async () => { const r = new e.ReplayStore(n + 1); for (const f of frames) await e.verifyFrame(f, {now, replay: r}); },
    rawVerify: async () => { for (let i = 0; i < n; i++) await crypto.subtle.verify({name: 'Ed25519'}, id.keyPair.publicKey, sig, input); },
  };
  for (const fn of Object.values(fns)) await fn();
  for (let r = 0; r < rounds; r++) for (const [k, fn] of Object.entries(fns)) runs[k].push(await time(fn));
  const med = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, med(v)]));
}"""


def python_verify_rate(frames: list[str], now: int, rounds: int) -> float:
    results = []
    for _ in range(rounds + 1):
        verifier = Verifier()
        t0 = time.perf_counter()
        for f in frames:
            verifier.verify(f, now=now)
        results.append(len(frames) / (time.perf_counter() - t0))
    return statistics.median(results[1:])


async def run(n: int, rounds: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    root = default_web_root()
    if chromium is None or root is None:
        raise SystemExit("needs the Debian chromium package and the web/ client")
    ca = LocalCA.create()
    tmp = Path(tempfile.mkdtemp())
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/bench.db")
    store = await open_store(cfg.store)
    relay = Relay(cfg, KeyPair.generate(), store, server_ssl=ca.server_context(), web_root=root)
    await relay.start()
    key = KeyPair.generate()
    now = int(time.time())
    frames = [
        encode_frame(
            sign_envelope(
                make_payload(
                    "bye",
                    sender=key.did,
                    now=now,
                    to=key.did,
                    session="01" + "A" * 24,
                    reason="user.hangup",
                ),
                key,
            )
        )
        for _ in range(n)
    ]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = await (await browser.new_context(ignore_https_errors=True)).new_page()
            await page.goto(f"https://localhost:{relay.ws_port}/")
            js: dict[str, Any] = await page.evaluate(_JS, [n, rounds, frames, now])
            await browser.close()
    finally:
        await relay.stop()
    return {
        **{k: float(v) for k, v in js.items()},
        "python": python_verify_rate(frames, now, rounds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    r = asyncio.run(run(args.n, args.rounds))
    rows = [
        ("browser signEnvelope/s", r["sign"], "raw WebCrypto sign/s", r["rawSign"]),
        ("browser verifyFrame/s", r["verify"], "raw WebCrypto verify/s", r["rawVerify"]),
        ("browser verifyFrame/s", r["verify"], "Python Verifier.verify/s", r["python"]),
    ]
    print(f"{'figure':<26}{'ops/s':>10}  {'reference':<26}{'ops/s':>10}  {'ratio':>6}")
    for name, value, ref_name, ref in rows:
        print(f"{name:<26}{value:>10.0f}  {ref_name:<26}{ref:>10.0f}  {value / ref:>6.2f}")


if __name__ == "__main__":
    main()
