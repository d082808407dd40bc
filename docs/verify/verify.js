// Verifying a plausible-webhooks delivery in Node (no dependencies).
// Verify the raw body bytes as received, before any JSON parsing.
const crypto = require("crypto");

// --- verify (shown in docs/receiving.md)
// secret: the webhook's secret, either kind ("whsec_<base64>" or plain text).
// headers: the request's headers (lower-case names); rawBody: a Buffer.
function verifyStandard(secret, headers, rawBody, toleranceSecs = 300) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  if (!id || !ts || Math.abs(Date.now() / 1000 - Number(ts)) > toleranceSecs) return false;
  const key = secret.startsWith("whsec_")
    ? Buffer.from(secret.slice(6), "base64")
    : Buffer.from(secret, "utf8");
  const expected = crypto.createHmac("sha256", key)
    .update(`${id}.${ts}.`).update(rawBody).digest();
  // One "v1,<base64>" per live secret, space separated (two during a rotation).
  return (headers["webhook-signature"] || "").split(" ").some((s) => {
    const sig = Buffer.from(s.startsWith("v1,") ? s.slice(3) : "", "base64");
    return sig.length === expected.length && crypto.timingSafeEqual(sig, expected);
  });
}

function verifyLegacy(secret, headers, rawBody) {
  const expected = Buffer.from("sha256=" + crypto.createHmac("sha256", Buffer.from(secret, "utf8"))
    .update(rawBody).digest("hex"));
  const got = Buffer.from(headers["x-webhook-signature"] || "");
  return got.length === expected.length && crypto.timingSafeEqual(got, expected);
}
// --- end

// The test harness: the body on stdin, the headers as JSON in HEADERS.
const body = require("fs").readFileSync(0);
const headers = JSON.parse(process.env.HEADERS);
const secret = process.env.WEBHOOK_SECRET;
const ok = verifyStandard(secret, headers, body) && verifyLegacy(secret, headers, body);
console.log(ok ? "verified" : "refused");
process.exit(ok ? 0 : 1);
