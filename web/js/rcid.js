// Rich Caller ID (rcid.v1, v0.7 §18) in the browser: verify each presented credential and
// render basis lines, never a generic "verified" badge (§18.1). Same wording and the same
// check order as dsip.core.trust.rcid / vc: shape → unsigned → proof type → issuer allowlist
// → signature → subject → validity → status.
//
// Supported securing: eddsa-jcs-2022 Data Integrity proofs and vc+jwt (EdDSA), by issuers
// whose keys are did:key (resolved locally). A credential carrying a Bitstring status entry
// fails closed here: the browser client does not fetch status lists.

import { b64urlDecode, base58Decode, concatBytes, decodeUtf8, jcs, utf8 } from "./codec.js";
import { publicKeyForKid, splitKid } from "./envelope.js";

export const RCID_TYPE = "rcid.v1";
const VC_CONTEXT = "https://www.w3.org/ns/credentials/v2";
const CLOCK_SKEW = 300;
export const CREDENTIAL_TYPES = [
  "DisplayNameCredential",
  "OrganizationCredential",
  "ReputationScore",
  "RoleCredential",
];
const KIND_LABELS = {
  DisplayNameCredential: "Display name credential",
  OrganizationCredential: "Organization credential",
  ReputationScore: "Reputation score",
  RoleCredential: "Role credential",
};
export const FAILURE_TEXT = {
  "credential-expired": "expired",
  "credential-not-yet-valid": "not valid yet",
  "credential-revoked": "revoked by its issuer",
  "credential-suspended": "suspended by its issuer",
  "credential-subject": "issued to a different identity",
  "credential-issuer": "issuer not trusted for this claim",
  "credential-signature": "signature does not verify (altered or forged)",
  "credential-unsigned": "unsigned",
  "credential-proof-unsupported": "unsupported proof type",
  "credential-status-unavailable": "revocation status could not be checked",
  "credential-status-stale": "revocation status is out of date",
  "credential-malformed": "malformed",
};
const MAX_SHOWN = 200;
const MAX_CREDENTIALS = 8;

class CredentialError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// No control or bidi characters in a UI line; bounded length.
export function clip(value) {
  const text = [...String(value)].filter((ch) => !/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(ch)).join("");
  return text.length <= MAX_SHOWN ? text : text.slice(0, MAX_SHOWN - 1) + "…";
}

export function didLabel(did) {
  if (typeof did === "string" && did.startsWith("did:web:")) {
    return clip(did.slice(8).split(":").map(decodeURIComponent).join("/"));
  }
  return clip(did);
}

export function identityBasis(did) {
  if (typeof did === "string" && did.startsWith("did:key:")) return "Self-issued identity";
  if (typeof did === "string" && did.startsWith("did:web:")) return `Domain verified (${clip(did)})`;
  return "Unrecognized identity method";
}

// trust: {issuers: Map(did → label)}; a listed issuer is trusted for every DSIP type.
function label(trust, issuer) {
  return trust.issuers.get(issuer) || didLabel(issuer);
}

function toTimestamp(value) {
  if (typeof value !== "string" || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/.test(value)) {
    throw new CredentialError("credential-malformed", "bad dateTime");
  }
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new CredentialError("credential-malformed", "bad dateTime");
  return Math.floor(t / 1000);
}

function shape(body) {
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new CredentialError("credential-malformed", "not an object");
  }
  const ctx = body["@context"];
  if (!Array.isArray(ctx) || ctx[0] !== VC_CONTEXT) throw new CredentialError("credential-malformed", "@context");
  if (!Array.isArray(body.type) || !body.type.includes("VerifiableCredential")) {
    throw new CredentialError("credential-malformed", "type");
  }
  const found = CREDENTIAL_TYPES.filter((t) => body.type.includes(t));
  if (found.length !== 1) throw new CredentialError("credential-malformed", "not one DSIP type");
  const subject = body.credentialSubject;
  if (!subject || typeof subject !== "object" || typeof subject.id !== "string") {
    throw new CredentialError("credential-malformed", "credentialSubject");
  }
  const issuer = typeof body.issuer === "object" && body.issuer ? body.issuer.id : body.issuer;
  if (typeof issuer !== "string") throw new CredentialError("credential-malformed", "issuer");
  return { type: found[0], issuer };
}

async function verifyKid(kid, issuer, message, signature) {
  let did;
  try {
    [did] = splitKid(kid);
  } catch {
    throw new CredentialError("credential-signature", "verification method is not a DID URL");
  }
  if (did !== issuer) throw new CredentialError("credential-signature", "signed by another DID than the issuer");
  let key;
  try {
    key = await publicKeyForKid(kid);
  } catch {
    throw new CredentialError("credential-signature", "issuer key does not resolve in the browser");
  }
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  if (!ok) throw new CredentialError("credential-signature", "signature does not verify");
}

async function sha256(text) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(text)));
}

async function verifySecured(presented, trust, now) {
  if (typeof presented === "string") {
    const parts = presented.split(".");
    if (presented.length > 8192 || parts.length !== 3) throw new CredentialError("credential-malformed", "not a JWS");
    let header, body;
    try {
      header = JSON.parse(decodeUtf8(b64urlDecode(parts[0], "credential-malformed")));
      body = JSON.parse(decodeUtf8(b64urlDecode(parts[1], "credential-malformed")));
    } catch {
      throw new CredentialError("credential-malformed", "JWS is not base64url JSON");
    }
    if (!header || typeof header !== "object") throw new CredentialError("credential-malformed", "header");
    if (header.alg === "none" || !parts[2]) throw new CredentialError("credential-unsigned", "no signature");
    if (header.alg !== "EdDSA" || header.typ !== "vc+jwt") {
      throw new CredentialError("credential-proof-unsupported", "not EdDSA vc+jwt");
    }
    if (typeof header.kid !== "string") throw new CredentialError("credential-signature", "no kid");
    if (body && typeof body === "object" && "proof" in body) throw new CredentialError("credential-malformed", "proof in JWT");
    const { type, issuer } = shape(body);
    if (!trust.issuers.has(issuer)) throw new CredentialError("credential-issuer", "issuer not trusted");
    let sig;
    try {
      sig = b64urlDecode(parts[2], "credential-signature");
    } catch {
      throw new CredentialError("credential-signature", "signature is not base64url");
    }
    await verifyKid(header.kid, issuer, utf8.encode(parts[0] + "." + parts[1]), sig);
    return { type, issuer, body };
  }
  const { type, issuer } = shape(presented);
  const proof = presented.proof;
  if (proof === undefined || proof === null) throw new CredentialError("credential-unsigned", "no proof");
  if (typeof proof !== "object" || Array.isArray(proof)) {
    throw new CredentialError("credential-proof-unsupported", "proof sets are not accepted");
  }
  if (proof.type !== "DataIntegrityProof" || proof.cryptosuite !== "eddsa-jcs-2022") {
    throw new CredentialError("credential-proof-unsupported", "not eddsa-jcs-2022");
  }
  if (!trust.issuers.has(issuer)) throw new CredentialError("credential-issuer", "issuer not trusted");
  if (proof.proofPurpose !== "assertionMethod") throw new CredentialError("credential-signature", "purpose");
  if ("@context" in proof && jcs(proof["@context"]) !== jcs(presented["@context"])) {
    throw new CredentialError("credential-signature", "proof @context differs");
  }
  const kid = proof.verificationMethod;
  const value = proof.proofValue;
  if (typeof kid !== "string" || typeof value !== "string" || !value.startsWith("z")) {
    throw new CredentialError("credential-malformed", "proof lacks verificationMethod/proofValue");
  }
  let sig;
  try {
    sig = base58Decode(value.slice(1));
  } catch {
    throw new CredentialError("credential-signature", "proofValue is not base58btc");
  }
  if (toTimestamp(proof.created) > now + CLOCK_SKEW) throw new CredentialError("credential-not-yet-valid", "future proof");
  if ("expires" in proof && toTimestamp(proof.expires) <= now) throw new CredentialError("credential-expired", "proof expired");
  const unsecured = Object.fromEntries(Object.entries(presented).filter(([k]) => k !== "proof"));
  const config = Object.fromEntries(Object.entries(proof).filter(([k]) => k !== "proofValue"));
  if ("@context" in unsecured && !("@context" in config)) config["@context"] = unsecured["@context"];
  const hashData = concatBytes(await sha256(jcs(config)), await sha256(jcs(unsecured)));
  await verifyKid(kid, issuer, hashData, sig);
  return { type, issuer, body: presented };
}

function checkSubject(type, subject) {
  const need = {
    DisplayNameCredential: "displayName",
    OrganizationCredential: "organization",
    RoleCredential: "role",
    ReputationScore: "score",
  }[type];
  if (subject[need] === undefined) throw new CredentialError("credential-malformed", `${type} subject lacks ${need}`);
}

async function checkCredential(presented, caller, trust, now) {
  const { type, issuer, body } = await verifySecured(presented, trust, now);
  const subject = body.credentialSubject;
  checkSubject(type, subject);
  if (subject.id !== caller) throw new CredentialError("credential-subject", "about another DID");
  if ("validFrom" in body && toTimestamp(body.validFrom) > now + CLOCK_SKEW) {
    throw new CredentialError("credential-not-yet-valid", "not valid yet");
  }
  if ("validUntil" in body && toTimestamp(body.validUntil) <= now) {
    throw new CredentialError("credential-expired", "expired");
  }
  if ("credentialStatus" in body) {
    throw new CredentialError("credential-status-unavailable", "status lists are not fetched by the browser");
  }
  return { type, issuer, subject };
}

function peek(presented) {
  let body = presented;
  if (typeof presented === "string") {
    try {
      body = JSON.parse(decodeUtf8(b64urlDecode(presented.split(".")[1] || "", "credential-malformed")));
    } catch {
      return [null, null];
    }
  }
  if (!body || typeof body !== "object") return [null, null];
  const type = Array.isArray(body.type) ? CREDENTIAL_TYPES.find((t) => body.type.includes(t)) ?? null : null;
  const issuer = typeof body.issuer === "string" ? body.issuer : body.issuer?.id ?? null;
  return [type, typeof issuer === "string" ? issuer : null];
}

// What the UI shows for a caller whose envelope verified as `caller` (its identity DID).
export async function renderCaller(payload, caller, trust, now) {
  const identity = payload && typeof payload.identity === "object" ? payload.identity : null;
  const claims = identity && Array.isArray(identity.claims) ? identity.claims : [];
  const rcid = claims.find((c) => c && typeof c === "object" && c.type === RCID_TYPE) ?? null;
  const claimedName =
    (rcid && typeof rcid.displayName === "string" && rcid.displayName) ||
    (identity && typeof identity.display_name === "string" && identity.display_name) ||
    null;
  const out = {
    caller,
    identityBasis: identityBasis(caller),
    name: claimedName ? clip(claimedName) : null,
    nameVerified: false,
    nameBasis: claimedName ? "Name claimed by the caller; not verified" : "No name presented",
    organization: null,
    basisLines: [],
    verifiedBy: [],
    unverified: [],
  };
  const credentials = rcid && Array.isArray(rcid.credentials) ? rcid.credentials.slice(0, MAX_CREDENTIALS) : [];
  for (const presented of credentials) {
    try {
      const good = await checkCredential(presented, caller, trust, now);
      const who = label(trust, good.issuer);
      out.basisLines.push(`${KIND_LABELS[good.type]} issued by ${clip(who)}`);
      const line = `Verified by ${clip(who)}`;
      if (!out.verifiedBy.includes(line)) out.verifiedBy.push(line);
      if (good.type === "DisplayNameCredential" && !out.nameVerified) {
        out.name = clip(good.subject.displayName);
        out.nameVerified = true;
        out.nameBasis = line;
      }
      if (good.type === "OrganizationCredential" && out.organization === null) {
        out.organization = clip(good.subject.organization);
      }
    } catch (e) {
      const code = e instanceof CredentialError ? e.code : "credential-malformed";
      const [type, issuer] = peek(presented);
      const who = issuer ? ` from ${label(trust, issuer)}` : "";
      out.unverified.push(`${type ?? "credential"}${who}: ${FAILURE_TEXT[code] ?? "malformed"}`);
    }
  }
  return out;
}
