// Verifying a plausible-webhooks `v1a` (ed25519) signature in Node (no dependencies).
// Verify the raw body bytes as received, before any JSON parsing.
const crypto = require("crypto");

// --- verify (shown in docs/receiving.md)
// publicKey: the webhook's public key, "whpk_<base64 of 32 bytes>".
// headers: the request's headers (lower-case names); rawBody: a Buffer.
function verifyV1a(publicKey, headers, rawBody, toleranceSecs = 300) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  if (!id || !ts || Math.abs(Date.now() / 1000 - Number(ts)) > toleranceSecs) return false;
  if (!publicKey.startsWith("whpk_")) return false;
  const key = crypto.createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey.slice(5), "base64").toString("base64url") },
    format: "jwk",
  });
  const msg = Buffer.concat([Buffer.from(`${id}.${ts}.`), rawBody]);
  // One "v1a,<base64>" per live key (two during a key rotation), beside any "v1," ones.
  return (headers["webhook-signature"] || "").split(" ").some((s) =>
    s.startsWith("v1a,") && crypto.verify(null, msg, key, Buffer.from(s.slice(4), "base64")));
}
// --- end

// The test harness: the body on stdin, the headers as JSON in HEADERS.
const body = require("fs").readFileSync(0);
const headers = JSON.parse(process.env.HEADERS);
const ok = verifyV1a(process.env.WEBHOOK_PUBLIC_KEY, headers, body);
console.log(ok ? "verified" : "refused");
process.exit(ok ? 0 : 1);
