// Byte codecs the DSIP wire needs: base64url (RFC 4648 §5, unpadded), base58btc (did:key
// multibase), ULID ids (Crockford base32) and JCS (RFC 8785) for eddsa-jcs-2022 proofs.
// Small enough to write here; no dependency, no build step.

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64URL_INDEX = new Map([...B64URL].map((c, i) => [c, i]));
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const B58_INDEX = new Map([...B58].map((c, i) => [c, i]));
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

export class CodecError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

export function decodeUtf8(bytes) {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new CodecError("payload-not-utf8", "bytes are not UTF-8");
  }
}

export function b64urlEncode(bytes) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
  }
  return out;
}

// Strict: only the URL-safe alphabet, no padding, and canonical (unused low bits zero), so
// one byte string has exactly one accepted text — as the Python verifier requires.
export function b64urlDecode(text, code = "envelope-shape") {
  if (typeof text !== "string" || text.length % 4 === 1) {
    throw new CodecError(code, "not base64url");
  }
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const c of text) {
    const v = B64URL_INDEX.get(c);
    if (v === undefined) throw new CodecError(code, "not base64url");
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 255;
    }
  }
  if (bits > 0 && (acc & ((1 << bits) - 1)) !== 0) {
    throw new CodecError(code, "non-canonical base64url");
  }
  return out.subarray(0, o);
}

export function base58Encode(bytes) {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  const digits = []; // little-endian base-58 digits
  for (let i = zeros; i < bytes.length; i++) {
    let carry = bytes[i];
    for (let j = 0; j < digits.length; j++) {
      carry += digits[j] << 8;
      digits[j] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  return "1".repeat(zeros) + digits.reverse().map((d) => B58[d]).join("");
}

export function base58Decode(text) {
  if (typeof text !== "string" || text.length === 0 || text.length > 200) {
    throw new CodecError("key-invalid", "not base58btc");
  }
  let zeros = 0;
  while (zeros < text.length && text[zeros] === "1") zeros++;
  const bytes = []; // little-endian
  for (let i = zeros; i < text.length; i++) {
    const v = B58_INDEX.get(text[i]);
    if (v === undefined) throw new CodecError("key-invalid", "not base58btc");
    let carry = v;
    for (let j = 0; j < bytes.length; j++) {
      carry += bytes[j] * 58;
      bytes[j] = carry & 255;
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push(carry & 255);
      carry >>= 8;
    }
  }
  return Uint8Array.from([...new Array(zeros).fill(0), ...bytes.reverse()]);
}

// ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (26 characters).
export function newUlid(ms = Date.now()) {
  let time = "";
  let t = ms;
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const rnd = crypto.getRandomValues(new Uint8Array(16));
  let random = "";
  for (let i = 0; i < 16; i++) random += CROCKFORD[rnd[i] & 31];
  return time + random;
}

export function isUlid(text) {
  return typeof text === "string" && /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/.test(text);
}

export function ulidTimeMs(text) {
  let t = 0;
  for (const c of text.slice(0, 10)) t = t * 32 + CROCKFORD.indexOf(c);
  return t;
}

// RFC 8785: object members sorted by UTF-16 code units, ECMAScript number and string
// serialization — which is exactly what JSON.stringify does for the primitives.
export function jcs(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new CodecError("credential-malformed", "not JSON");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }
  throw new CodecError("credential-malformed", "not JSON");
}

export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// What JSON.parse does not tell: a duplicate member name (last one wins in JavaScript, an
// error for the Python verifier — two parsers must never read different values under one
// signature, §10.3) and a number written as a float ("1.0" parses to the integer 1). Run on
// text JSON.parse has accepted. Returns {duplicate: name | null, float: boolean}.
export function scanJson(text) {
  const stack = []; // per open container: {keys: Set | null, expectKey}
  let float = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (top.keys.has(key)) return { duplicate: key, float };
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === "{") {
      stack.push({ keys: new Set(), expectKey: true });
    } else if (c === "[") {
      stack.push({ keys: null, expectKey: false });
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top && top.keys) top.expectKey = true;
    } else if (c === "." || ((c === "e" || c === "E") && i > 0 && text[i - 1] >= "0" && text[i - 1] <= "9")) {
      float = true;
    }
  }
  return { duplicate: null, float };
}
