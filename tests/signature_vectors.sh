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
