package config

import (
	"strings"
	"testing"
)

func TestTLSSettingsNeedATLSURL(t *testing.T) {
	base := "host_id: h1\ndata_dir: /var/lib/mqagent\nsecurity: {require_signed: false}\n"
	bad := base + "broker: {urls: [\"tcp://127.0.0.1:1883\"], tls: {insecure_skip_verify: true}}\n"
	if _, err := Parse([]byte(bad), "x.yaml"); err == nil || !strings.Contains(err.Error(), "broker.tls: is set but no broker URL uses TLS") {
		t.Fatalf("tls with tcp:// only: %v", err)
	}
	good := base + "broker: {urls: [\"tcp://127.0.0.1:1883\", \"ssl://127.0.0.1:8883\"], tls: {insecure_skip_verify: true}}\n"
	if _, err := Parse([]byte(good), "x.yaml"); err != nil {
		t.Fatalf("tls with an ssl:// url: %v", err)
	}
}
