# Verifying a plausible-webhooks delivery in Python (standard library only).
# Verify the raw body bytes as received, before any JSON parsing.
import base64, hashlib, hmac, json, os, sys, time

# --- verify (shown in docs/receiving.md)
# secret: the webhook's secret, either kind ("whsec_<base64>" or plain text).
# headers: the request's headers (lower-case names); raw_body: bytes.
def verify_standard(secret, headers, raw_body, tolerance_secs=300):
    msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not ts or abs(time.time() - int(ts)) > tolerance_secs:
        return False
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    expected = hmac.new(key, f"{msg_id}.{ts}.".encode() + raw_body, hashlib.sha256).digest()
    # One "v1,<base64>" per live secret, space separated (two during a rotation).
    return any(
        s.startswith("v1,") and hmac.compare_digest(base64.b64decode(s[3:]), expected)
        for s in headers.get("webhook-signature", "").split(" ")
    )

def verify_legacy(secret, headers, raw_body):
    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-webhook-signature", ""), expected)
# --- end

# The test harness: the body on stdin, the headers as JSON in HEADERS.
if __name__ == "__main__":
    body = sys.stdin.buffer.read()
    headers = json.loads(os.environ["HEADERS"])
    secret = os.environ["WEBHOOK_SECRET"]
    ok = verify_standard(secret, headers, body) and verify_legacy(secret, headers, body)
    print("verified" if ok else "refused")
    sys.exit(0 if ok else 1)
