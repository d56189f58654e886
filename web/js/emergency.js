// What an emergency call would share, and with whom (seed §19–§20.3; the same rule as
// dsip.core.emergency.privacy): the precise location only ever goes to an emergency
// namespace DID — a did:web whose host starts with an emergency number label
// (did:web:911.us, did:web:112.eu, …); to any other DID it is refused.

export const EMERGENCY_NUMBERS = new Set([
  "911", "112", "999", "000", "110", "111", "119", "100", "101", "102", "108", "117", "190",
]);

export function isEmergencyDid(did) {
  if (typeof did !== "string" || !/^did:web:[A-Za-z0-9.%:-]+$/.test(did)) return false;
  let host;
  try {
    host = decodeURIComponent(did.slice(8).split(":")[0]).split(":")[0].toLowerCase();
  } catch {
    return false;
  }
  const labels = host.split(".");
  return labels.length >= 2 && EMERGENCY_NUMBERS.has(labels[0]) && labels.slice(1).every(Boolean);
}

// position: {latitude, longitude, accuracy} or null (no fix / permission refused).
export function emergencyShares(psap, position, myDid) {
  const allowed = isEmergencyDid(psap);
  // a line is a list of parts; {did} parts are shown (and masked in screenshots) as DIDs
  const shares = [
    ["Your identity ", { did: myDid }, ` — to ${psap || "(no service chosen)"}, signed, as in every call`],
  ];
  if (!allowed) {
    shares.push("Precise location: not shared (the recipient is not an emergency service DID)");
    return {
      allowed,
      shares,
      verdict: `Refused: ${psap || "(empty)"} is not an emergency service DID (did:web:911.*, did:web:112.*, …); precise location is never sent to it.`,
    };
  }
  if (position) {
    const lat = position.latitude.toFixed(5);
    const lon = position.longitude.toFixed(5);
    shares.push(
      `Precise location ${lat}, ${lon} (±${Math.round(position.accuracy)} m) — only to ${psap}, sealed end to end; relays on the path see ciphertext`,
    );
  } else {
    shares.push("Precise location: no position available from this browser");
  }
  shares.push("Nobody else: not your contacts, not the relay operator");
  return { allowed, shares, verdict: `${psap} is an emergency service DID: precise location allowed.` };
}
