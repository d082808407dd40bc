// Verifying a plausible-webhooks `v1a` (ed25519) signature in Go (standard library only).
// Verify the raw body bytes as received, before any JSON parsing.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// --- verify (shown in docs/receiving.md)
// publicKey: the webhook's public key, "whpk_<base64 of 32 bytes>".
// header: the request's header lookup (http.Header.Get); rawBody: the body bytes.
func verifyV1a(publicKey string, header func(string) string, rawBody []byte) bool {
	id, ts := header("webhook-id"), header("webhook-timestamp")
	sent, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil || math.Abs(float64(time.Now().Unix()-sent)) > 300 {
		return false
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(publicKey, "whpk_"))
	if !strings.HasPrefix(publicKey, "whpk_") || err != nil || len(key) != ed25519.PublicKeySize {
		return false
	}
	msg := append([]byte(id+"."+ts+"."), rawBody...)
	// One "v1a,<base64>" per live key (two during a key rotation), beside any "v1," ones.
	for _, s := range strings.Split(header("webhook-signature"), " ") {
		sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "v1a,"))
		if strings.HasPrefix(s, "v1a,") && err == nil && ed25519.Verify(key, msg, sig) {
			return true
		}
	}
	return false
}

// --- end

// The test harness: the body on stdin, the headers as JSON in HEADERS.
func main() {
	body, _ := io.ReadAll(os.Stdin)
	var headers map[string]string
	if err := json.Unmarshal([]byte(os.Getenv("HEADERS")), &headers); err != nil {
		panic(err)
	}
	get := func(k string) string { return headers[strings.ToLower(k)] }
	ok := verifyV1a(os.Getenv("WEBHOOK_PUBLIC_KEY"), get, body)
	if ok {
		fmt.Println("verified")
		os.Exit(0)
	}
	fmt.Println("refused")
	os.Exit(1)
}
