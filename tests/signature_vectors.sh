#!/usr/bin/env bash
# Recomputes the fixed signature vectors in src/delivery/signing.rs with
# independent tools (openssl and Python's hmac), so they are not our own output.
BODY='{"id":"0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69","event":"goal_completion","site_id":"example.com","timestamp":"2026-02-25T12:00:00Z","data":{"goal_id": 7}}'
printf '%s' "$BODY" | openssl dgst -sha256 -hmac 'this-is-a-plain-secret-of-32-chars!!'
python3 - "$BODY" <<'PY'
import hmac, hashlib, base64, sys
body = sys.argv[1]
msg = f"0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69.1772020800.{body}".encode()
for key in [b"this-is-a-plain-secret-of-32-chars!!", base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]:
    print("v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode())
PY
# The v1a (ed25519) vectors, with Python's `cryptography` (OpenSSL), over the
# same message; the seeds are RFC 8032's test 1 and 2. Prints the whsk_ seed,
# the 64-byte whsk_ form, whpk_ and v1a for each.
python3 - "$BODY" <<'PY'
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
msg = f"0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69.1772020800.{sys.argv[1]}".encode()
for seed in ["9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
             "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"]:
    k = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    pub = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    b64 = lambda b: base64.b64encode(b).decode()
    print("whsk_" + b64(bytes.fromhex(seed)), "whsk_" + b64(bytes.fromhex(seed) + pub))
    print("whpk_" + b64(pub))
    print("v1a," + b64(k.sign(msg)))
PY
