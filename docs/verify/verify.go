// Verifying a plausible-webhooks delivery in Go (standard library only).
// Verify the raw body bytes as received, before any JSON parsing.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
// secret: the webhook's secret, either kind ("whsec_<base64>" or plain text).
// header: the request's header lookup (http.Header.Get); rawBody: the body bytes.
func verifyStandard(secret string, header func(string) string, rawBody []byte) bool {
	id, ts := header("webhook-id"), header("webhook-timestamp")
	sent, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil || math.Abs(float64(time.Now().Unix()-sent)) > 300 {
		return false
	}
	key := []byte(secret)
	if strings.HasPrefix(secret, "whsec_") {
		if key, err = base64.StdEncoding.DecodeString(secret[6:]); err != nil {
			return false
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(rawBody)
	expected := mac.Sum(nil)
	// One "v1,<base64>" per live secret, space separated (two during a rotation).
	for _, s := range strings.Split(header("webhook-signature"), " ") {
		sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "v1,"))
		if strings.HasPrefix(s, "v1,") && err == nil && hmac.Equal(sig, expected) {
			return true
		}
	}
	return false
}

func verifyLegacy(secret string, header func(string) string, rawBody []byte) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(rawBody)
	expected := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header("x-webhook-signature")), []byte(expected))
}
// --- end

// The test harness: the body on stdin, the headers as JSON in HEADERS.
func main() {
	body, _ := io.ReadAll(os.Stdin)
	var headers map[string]string
	if err := json.Unmarshal([]byte(os.Getenv("HEADERS")), &headers); err != nil {
		panic(err)
	}
	get := func(name string) string { return headers[name] }
	secret := os.Getenv("WEBHOOK_SECRET")
	if verifyStandard(secret, get, body) && verifyLegacy(secret, get, body) {
		fmt.Println("verified")
		return
	}
	fmt.Println("refused")
	os.Exit(1)
}
