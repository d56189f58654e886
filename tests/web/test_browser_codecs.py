"""The browser's codecs and envelopes against the Python implementation, byte for byte."""

from __future__ import annotations

import json
import time
from typing import Any

import base58
import pytest
import rfc8785

from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame, sign_bytes
from dsip.core.ulid import is_ulid, ulid_time_ms
from dsip.errors import DsipError
from dsip.services.relay import Relay
from tests.web.conftest import open_client

pytestmark = pytest.mark.timeout(60)

_JS = """async ([raw, blobs, doc]) => {
  const c = await import('/js/codec.js');
  const e = await import('/js/envelope.js');
  const id = await e.Identity.generate();
  const payload = e.makePayload('introduction', {from: id.did, to: id.did, ttl: 3600,
    purpose: 'tab\\t and 𝄞', identity: {display_name: 'Zoë 🎧 "quoted" \\\\ back'}});
  return {
    did: e.didKeyFromRaw(Uint8Array.from(raw)),
    b58: blobs.map((b) => c.base58Encode(Uint8Array.from(b))),
    b58back: blobs.filter((b) => b.length).map(
      (b) => Array.from(c.base58Decode(c.base58Encode(Uint8Array.from(b))))),
    jcs: c.jcs(doc),
    ulid: c.newUlid(1700000000123),
    frame: e.encodeFrame(await e.signEnvelope(payload, id)),
  };
}"""


async def test_codecs_and_signatures_match_the_python_side(browser: Any, web_relay: Relay) -> None:
    page = await open_client(browser, web_relay)
    key = KeyPair.generate()
    raw = list(key.public_key.public_bytes_raw())
    blobs = [[0, 0, 1, 2], [0], [255] * 40, [], list(range(1, 35))]
    doc = {"b": [1, -0.0, 1e21, 0.1, "é\u2028"], "a": {"z": None, "\u00e9": True, "A": 3}}
    out = await page.evaluate(_JS, [raw, blobs, doc])
    assert out["did"] == key.did
    assert out["b58"] == [base58.b58encode(bytes(b)).decode() for b in blobs]
    assert out["b58back"] == [b for b in blobs if b]
    assert out["jcs"].encode() == rfc8785.dumps(doc)
    assert is_ulid(out["ulid"])
    assert ulid_time_ms(out["ulid"]) == 1_700_000_000_123
    v = Verifier().verify(out["frame"], now=int(time.time()))  # the full Python pipeline
    assert v.type == "introduction"
    assert v.payload["purpose"] == "tab\t and 𝄞"
    assert v.payload["identity"]["display_name"] == 'Zoë 🎧 "quoted" \\ back'


async def test_the_browser_verifies_python_signed_envelopes(browser: Any, web_relay: Relay) -> None:
    page = await open_client(browser, web_relay)
    key = KeyPair.generate()
    payload = make_payload(
        "bye",
        sender=key.did,
        now=int(time.time()),
        to=key.did,
        session="01" + "A" * 24,
        reason="user.hangup",
        note="ünïcode ✓",
    )
    frame = encode_frame(sign_envelope(payload, key))
    got = await page.evaluate(
        """async (f) => {
          const e = await import('/js/envelope.js');
          const v = await e.verifyFrame(f, {replay: new e.ReplayStore()});
          return JSON.stringify(v.payload);
        }""",
        frame,
    )
    assert json.loads(got) == payload


def _hostile_payloads(key: KeyPair, now: int) -> dict[str, bytes]:
    base = make_payload(
        "bye", sender=key.did, now=now, to=key.did, session="01" + "A" * 24, reason="user.hangup"
    )
    text = json.dumps(base, separators=(",", ":"))
    other = KeyPair.generate().did
    return {
        "duplicate member": text.replace('"to":', f'"to":"{other}","to":', 1).encode(),
        "float written as 1.0": text.replace('"reason":', '"x":1.0,"reason":', 1).encode(),
        "exponent": text.replace('"reason":', '"x":1e3,"reason":', 1).encode(),
        "integer beyond 2**53": text.replace('"reason":', f'"x":{2**60},"reason":', 1).encode(),
        "not JSON": text[:-1].encode(),
        "not UTF-8": text.encode().replace(b"user.hangup", b"user.\xff\xfe"),
        "array": b"[1,2]",
        "no id": json.dumps({k: v for k, v in base.items() if k != "id"}).encode(),
        "id not a ULID": json.dumps(dict(base, id="not-a-ulid")).encode(),
        "from another DID": json.dumps(dict(base, **{"from": other})).encode(),
        "expires before issued": json.dumps(dict(base, expires_at=now - 1)).encode(),
        "ULID time far from issued_at": json.dumps(dict(base, id="01" + "0" * 24)).encode(),
    }


async def test_hostile_payloads_get_the_python_verdict_in_the_browser(
    browser: Any, web_relay: Relay
) -> None:
    page = await open_client(browser, web_relay)
    key = KeyPair.generate()
    now = int(time.time())
    frames = {
        name: encode_frame(sign_bytes(body, key))
        for name, body in _hostile_payloads(key, now).items()
    }
    expected = {}
    for name, frame in frames.items():
        with pytest.raises(DsipError) as err:
            Verifier().verify(frame, now=now)
        expected[name] = err.value.code
    got = await page.evaluate(
        """async ([frames, now]) => {
          const e = await import('/js/envelope.js');
          const out = {};
          for (const [name, f] of Object.entries(frames)) {
            try { await e.verifyFrame(f, {now, replay: new e.ReplayStore()}); out[name] = 'accepted'; }
            catch (err) { out[name] = err.code ?? String(err); }
          }
          return out;
        }""",
        [frames, now],
    )
    assert got == expected
