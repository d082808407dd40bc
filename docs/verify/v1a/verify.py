# Verifying a plausible-webhooks `v1a` (ed25519) signature in Python, with the
# `cryptography` package (pip install cryptography; Debian: python3-cryptography).
# Verify the raw body bytes as received, before any JSON parsing.
import base64, json, os, sys, time
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# --- verify (shown in docs/receiving.md)
# public_key: the webhook's public key, "whpk_<base64 of 32 bytes>".
# headers: the request's headers (lower-case names); raw_body: bytes.
def verify_v1a(public_key, headers, raw_body, tolerance_secs=300):
    msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not ts or abs(time.time() - int(ts)) > tolerance_secs:
        return False
    if not public_key.startswith("whpk_"):
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[5:]))
    msg = f"{msg_id}.{ts}.".encode() + raw_body
    # One "v1a,<base64>" per live key (two during a key rotation), beside any "v1," ones.
    for s in headers.get("webhook-signature", "").split(" "):
        if s.startswith("v1a,"):
            try:
                key.verify(base64.b64decode(s[4:]), msg)
                return True
            except (InvalidSignature, ValueError):
                pass
    return False
# --- end

# The test harness: the body on stdin, the headers as JSON in HEADERS.
if __name__ == "__main__":
    body = sys.stdin.buffer.read()
    headers = json.loads(os.environ["HEADERS"])
    ok = verify_v1a(os.environ["WEBHOOK_PUBLIC_KEY"], headers, body)
    print("verified" if ok else "refused")
    sys.exit(0 if ok else 1)
