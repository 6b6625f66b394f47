package serve_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

// A client that sends its headers and then trickles (or stalls) its body gets 408 once the
// body timeout passes, instead of holding a handler for as long as it likes.
func TestSlowBodyTimesOut(t *testing.T) {
	e, _ := loadEngine(t, "stories260K/stories260K.gguf")
	_, _, ts := start(t, e, engine.SchedulerOptions{}, serve.Options{BodyTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":"))
	require.NoError(t, err)
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	require.Less(t, time.Since(start), 5*time.Second)

	// A normal request on a fresh connection still works: the deadline was per request.
	r2, _ := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 4, "temperature": 0})
	require.Equal(t, http.StatusOK, r2.StatusCode)
}
