package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealthcheck(t *testing.T) {
	status := http.StatusServiceUnavailable
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		w.Write([]byte(`{"status":"x"}`))
	}))
	defer ts.Close()
	_, errOut, code := cli(t, "healthcheck", "--url", ts.URL+"/health")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "503")
	status = http.StatusOK
	out, _, code := cli(t, "healthcheck", "--url", ts.URL+"/health")
	require.Equal(t, 0, code)
	require.Contains(t, out, "status")
	_, _, code = cli(t, "healthcheck", "--url", "http://127.0.0.1:1/health", "--timeout", "500ms")
	require.Equal(t, 1, code)
}
