// DSIP-JOSE envelopes in the browser (v0.7 §10–§12.9): did:key identities on WebCrypto
// Ed25519, signing exactly as the Python verifier expects, and a verifier for what arrives.
//
// Wire rules (the same bytes as dsip.core.jws / dsip.core.envelope):
//   protected = b64url(JSON {"alg":"EdDSA","kid":<did:key…#z…>,"typ":"dsip+json"})
//   payload   = b64url(compact JSON of the payload; integers only, §10.3)
//   signature = b64url(Ed25519(ASCII "protected.payload"))
//   frame     = {"protected":…,"payload":…,"signature":…} (one envelope per ws/1.0 message)

import {
  CodecError,
  b64urlDecode,
  b64urlEncode,
  base58Decode,
  base58Encode,
  concatBytes,
  decodeUtf8,
  isUlid,
  scanJson,
  newUlid,
  ulidTimeMs,
  utf8,
} from "./codec.js";

export const MAX_FRAME_BYTES = 65536;
export const REPLAY_WINDOW = 300;
export const DEFAULT_TTL = 30;
const ED25519_PUB = Uint8Array.of(0xed, 0x01); // multicodec ed25519-pub
const TYP = "dsip+json";

export class VerifyError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

// --- identity ---------------------------------------------------------------------------

export function didKeyFromRaw(raw) {
  return "did:key:z" + base58Encode(concatBytes(ED25519_PUB, raw));
}

// did:key:z6Mk… → the raw 32-byte Ed25519 public key (the only method a browser resolves
// on its own; did:web needs an HTTPS fetch of the DID document, not done here).
export function rawFromDidKey(did) {
  if (typeof did !== "string" || !did.startsWith("did:key:z")) {
    throw new VerifyError("kid-unresolvable", "not a did:key");
  }
  let bytes;
  try {
    bytes = base58Decode(did.slice("did:key:z".length));
  } catch {
    throw new VerifyError("kid-unresolvable", "did:key is not base58btc");
  }
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw new VerifyError("kid-unresolvable", "did:key is not an Ed25519 key");
  }
  return bytes.subarray(2);
}

export function splitKid(kid) {
  if (typeof kid !== "string" || kid.length > 2048) {
    throw new VerifyError("kid-invalid", "kid is not a DID URL");
  }
  const m = /^(did:[a-z0-9]+:[A-Za-z0-9._:%-]+)#([A-Za-z0-9._~%-]+)$/.exec(kid);
  if (!m) throw new VerifyError("kid-invalid", "kid is not a DID URL with a fragment");
  return [m[1], m[2]];
}

const KEY_CACHE = new Map(); // kid → imported CryptoKey (bounded; a peer signs with one kid)
const KEY_CACHE_SIZE = 256;

// The public key behind a did:key DID URL: its fragment must be the key itself (§8.1).
export async function publicKeyForKid(kid) {
  const cached = KEY_CACHE.get(kid);
  if (cached) return cached;
  const [did, fragment] = splitKid(kid);
  const raw = rawFromDidKey(did);
  if (fragment !== did.slice("did:key:".length)) {
    throw new VerifyError("kid-unresolvable", "kid fragment is not the did:key's key");
  }
  const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  if (KEY_CACHE.size >= KEY_CACHE_SIZE) KEY_CACHE.delete(KEY_CACHE.keys().next().value);
  KEY_CACHE.set(kid, key);
  return key;
}

export class Identity {
  constructor(keyPair, raw) {
    this.keyPair = keyPair;
    this.did = didKeyFromRaw(raw);
    this.kid = this.did + "#" + this.did.slice("did:key:".length);
  }

  static async generate() {
    // Non-extractable private key: IndexedDB keeps the CryptoKey object, never its bytes.
    const keyPair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
      "sign",
      "verify",
    ]);
    return Identity.fromKeyPair(keyPair);
  }

  static async fromKeyPair(keyPair) {
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", keyPair.publicKey));
    return new Identity(keyPair, raw);
  }

  async sign(bytes) {
    return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, this.keyPair.privateKey, bytes));
  }
}

// --- construction -----------------------------------------------------------------------

export function versionBlock(profiles = ["interactive-media/1.0"]) {
  return { core: "1.0", min_core: "1.0", profiles, extensions: [], critical: [] };
}

export function makePayload(type, { from, now = nowSeconds(), ttl = DEFAULT_TTL, id, profiles, ...fields }) {
  const payload = {
    dsip: versionBlock(profiles ?? (type === "hello" ? [] : ["interactive-media/1.0"])),
    type,
    id: id ?? newUlid(now * 1000),
    from,
    ...fields,
  };
  payload.issued_at = now;
  payload.expires_at = now + ttl;
  return payload;
}

export async function signEnvelope(payload, identity) {
  const header = { alg: "EdDSA", kid: identity.kid, typ: TYP };
  const protectedB64 = b64urlEncode(utf8.encode(JSON.stringify(header)));
  const body = b64urlEncode(utf8.encode(JSON.stringify(payload)));
  const sig = await identity.sign(utf8.encode(protectedB64 + "." + body));
  return { protected: protectedB64, payload: body, signature: b64urlEncode(sig) };
}

export function encodeFrame(env) {
  return JSON.stringify({ protected: env.protected, payload: env.payload, signature: env.signature });
}

// --- verification -----------------------------------------------------------------------

// Ids seen inside the replay window; bounded like the Python ReplayStore (refuse, not forget).
export class ReplayStore {
  constructor(capacity = 4096) {
    this.capacity = capacity;
    this.ids = new Map(); // id → forget-at
  }
  check(id, now) {
    // Oldest first (insertion order); stop at the first live id. An id that arrived out of
    // order is kept a little longer, never forgotten early.
    for (const [k, t] of this.ids) {
      if (t >= now) break;
      this.ids.delete(k);
    }
    if (this.ids.has(id)) throw new VerifyError("duplicate-id", `message id ${id} was already seen`);
    if (this.ids.size >= this.capacity) throw new VerifyError("replay-store-full", "too many live ids");
  }
  add(id, issuedAt) {
    this.ids.set(id, issuedAt + REPLAY_WINDOW);
  }
}

const HELD_TYPES = new Set(["introduction", "sealed", "msg"]);
const MAX_HOLD_S = 7 * 86400;

// Strict JSON as the Python side reads it (dsip.core.jsonwire): no duplicate member names,
// no integers beyond ±(2**53 − 1); floats are reported for the caller's stage order.
function strictParse(text, code) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new VerifyError(code, "not JSON");
  }
  const scan = scanJson(text);
  if (scan.duplicate !== null) throw new VerifyError(code, "duplicate member name");
  if (!scan.float && hasUnsafeInteger(value)) throw new VerifyError(code, "integer beyond 2**53");
  return { value, float: scan.float };
}

function hasUnsafeInteger(value) {
  if (typeof value === "number") return !Number.isSafeInteger(value);
  if (Array.isArray(value)) return value.some(hasUnsafeInteger);
  if (value && typeof value === "object") return Object.values(value).some(hasUnsafeInteger);
  return false;
}

// The pipeline stages a browser can run, in the Python verifier's order: frame cap → shape
// → header → kid → signature → payload → signer binding → times → duplicate → ULID time.
// Returns {payload, signer, kid}; throws VerifyError(code) and records nothing on failure.
export async function verifyFrame(frame, { now = nowSeconds(), replay } = {}) {
  if (typeof frame !== "string") throw new VerifyError("envelope-shape", "not a text frame");
  if (utf8.encode(frame).length > MAX_FRAME_BYTES) {
    throw new VerifyError("frame-too-large", "frame exceeds 65536 bytes");
  }
  const obj = strictParse(frame, "envelope-shape").value;
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) {
    throw new VerifyError("envelope-shape", "envelope is not a JSON object");
  }
  const keys = Object.keys(obj).sort().join(",");
  if (keys !== "payload,protected,signature") {
    throw new VerifyError("envelope-shape", "members must be exactly protected/payload/signature");
  }
  const { protected: p, payload: pl, signature: s } = obj;
  if (![p, pl, s].every((v) => typeof v === "string" && v.length > 0)) {
    throw new VerifyError("envelope-shape", "members must be non-empty strings");
  }
  let headerBytes, payloadBytes, sigBytes;
  try {
    headerBytes = b64urlDecode(p);
    payloadBytes = b64urlDecode(pl);
    sigBytes = b64urlDecode(s);
  } catch (e) {
    throw new VerifyError("envelope-shape", e instanceof CodecError ? e.message : "bad base64url");
  }
  let header;
  try {
    header = strictParse(decodeUtf8(headerBytes), "header-invalid").value;
  } catch {
    throw new VerifyError("header-invalid", "protected header is not JSON");
  }
  if (!header || typeof header !== "object" || typeof header.alg !== "string" || typeof header.kid !== "string") {
    throw new VerifyError("header-invalid", "protected header needs string alg and kid");
  }
  if ("crit" in header || "b64" in header) throw new VerifyError("header-invalid", "crit/b64 not supported");
  if (header.alg !== "EdDSA") throw new VerifyError("alg-unsupported", `alg ${header.alg} is not EdDSA`);
  const [signer] = splitKid(header.kid);
  if (Array.isArray(header.delegations) && header.delegations.length) {
    throw new VerifyError("kid-unresolvable", "delegated devices are not verified by this client");
  }
  const key = await publicKeyForKid(header.kid);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, sigBytes, utf8.encode(p + "." + pl));
  if (!ok) throw new VerifyError("signature-invalid", "Ed25519 signature does not verify");
  let text;
  try {
    text = decodeUtf8(payloadBytes);
  } catch {
    throw new VerifyError("payload-not-utf8", "payload is not UTF-8");
  }
  const parsed = strictParse(text, "payload-not-json");
  const payload = parsed.value;
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) {
    throw new VerifyError("payload-not-json", "payload is not a JSON object");
  }
  if (parsed.float) throw new VerifyError("payload-float", "payload has a non-integer number (§10.3)");
  for (const k of ["type", "id", "from"]) {
    if (typeof payload[k] !== "string") throw new VerifyError("payload-shape", `${k} missing`);
  }
  for (const k of ["issued_at", "expires_at"]) {
    if (!Number.isInteger(payload[k])) throw new VerifyError("payload-shape", `${k} missing`);
  }
  if (!payload.dsip || typeof payload.dsip !== "object") throw new VerifyError("payload-shape", "no dsip block");
  if (!isUlid(payload.id)) throw new VerifyError("payload-shape", "id is not a ULID");
  if (payload.from !== signer) {
    throw new VerifyError("signer-mismatch", "the signing key is not the sender's (`from`)");
  }
  const iat = payload.issued_at;
  const exp = payload.expires_at;
  if (exp <= iat) throw new VerifyError("expiry-order", "expires_at is not after issued_at");
  const held = HELD_TYPES.has(payload.type) && exp - iat <= MAX_HOLD_S;
  if (!((held ? iat : now - REPLAY_WINDOW) <= iat && iat <= now + REPLAY_WINDOW)) {
    throw new VerifyError("replay-window", `issued_at ${iat} is outside now ± ${REPLAY_WINDOW} s`);
  }
  if (exp < now) throw new VerifyError("expired", "envelope has expired");
  if (replay) replay.check(payload.id, now);
  if (Math.abs(ulidTimeMs(payload.id) - iat * 1000) > 300000) {
    throw new VerifyError("ulid-issued-at-mismatch", "ULID time and issued_at differ");
  }
  if (replay) replay.add(payload.id, iat);
  return { payload, signer, kid: header.kid };
}
