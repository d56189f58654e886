// The device key in IndexedDB: the CryptoKeyPair object itself is stored (structured clone),
// with a non-extractable private key, so page scripts can sign but never read the key bytes.

const DB = "dsip";
const STORE = "keys";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function run(mode, fn) {
  return open().then(
    (db) =>
      new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const req = fn(tx.objectStore(STORE));
        tx.oncomplete = () => {
          db.close();
          resolve(req.result);
        };
        tx.onerror = () => reject(tx.error);
      }),
  );
}

export function loadKeyPair() {
  return run("readonly", (s) => s.get("device"));
}

export function saveKeyPair(keyPair) {
  return run("readwrite", (s) => s.put(keyPair, "device"));
}

export function forgetKeyPair() {
  return run("readwrite", (s) => s.delete("device"));
}
