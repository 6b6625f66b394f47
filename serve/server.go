// Package serve is an OpenAI-compatible HTTP server over an engine.Scheduler, written on net/http
// alone:
//
//	POST /v1/completions       text completion, streamed as server-sent events with "stream": true
//	POST /v1/chat/completions  chat completion in the Llama 2 chat format (package chat)
//	POST /v1/embeddings        embeddings of texts or token ids (embeddings.go)
//	GET  /v1/models            the one model served
//	GET  /health               200 when ready; 503 while the model loads or the server drains
//	GET  /metrics              Prometheus text format (see metrics.go)
//	/api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/version: ollama's API (ollama.go)
//	/api/embed, /api/embeddings: ollama's embeddings (embeddings.go)
//
// A Server can exist before its model: cmd serve listens at once, answers /health with 503 while
// the weights load, then calls SetEngine. Under pressure it answers as OpenAI's API does, with a
// JSON body {"error": {"message", "type", "param", "code"}}: 429 when the scheduler's queue is
// full, 400 for malformed JSON, wrong types, bad parameters or a prompt plus max_tokens beyond the
// context, 413 for a body over Options.MaxBodyBytes, 401 without the right Bearer key (when
// Options.APIKey is set; /health and /metrics stay open for probes and scrapers). A client that
// disconnects cancels its request: the scheduler frees its sequence and KV blocks at the next
// step boundary.
package serve

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/llamacu/llamacu/engine"
)

// Options configure a Server.
type Options struct {
	// APIKey, when not empty, is required as "Authorization: Bearer KEY" on /v1/ endpoints.
	APIKey string
	// ModelName is the model id reported by /v1/models and in responses (default "llamacu").
	// Requests may name any model: the server has one.
	ModelName string
	// MaxBodyBytes limits a request body (default 1 MiB); larger bodies get 413.
	MaxBodyBytes int64
	// BodyTimeout bounds how long a client may take to send its request body (default 30 s);
	// a slower one gets 408, so a trickling client cannot hold a handler. (http.Server's
	// ReadTimeout would also cut long streamed responses.)
	BodyTimeout time.Duration
	// DefaultMaxTokens is max_tokens for a completion that does not set it (default 16, as
	// OpenAI's legacy completions). Chat completions without max_tokens generate until EOS or
	// the end of the context.
	DefaultMaxTokens int
	// Pooling makes an embedding of a text's hidden states (default engine.PoolLast, as
	// llama.cpp and ollama for a LLaMA model).
	Pooling engine.Pooling
}

// Server is the HTTP handler. It is safe for concurrent use.
type Server struct {
	opts    Options
	ready   atomic.Pointer[backend]
	drain   atomic.Bool
	metrics *metrics
	created int64 // unix seconds, for /v1/models
}

// backend is what a ready server runs on.
type backend struct {
	sched *engine.Scheduler
	e     *engine.Engine
}

// New returns a Server over sched and e; both may be nil, in which case the server answers 503
// ("loading") until SetEngine is called.
func New(sched *engine.Scheduler, e *engine.Engine, opts Options) *Server {
	if opts.ModelName == "" {
		opts.ModelName = "llamacu"
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 30 * time.Second
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.DefaultMaxTokens <= 0 {
		opts.DefaultMaxTokens = 16
	}
	s := &Server{opts: opts, metrics: newMetrics(), created: time.Now().Unix()}
	if sched != nil || e != nil {
		s.SetEngine(sched, e)
	}
	return s
}

// SetEngine makes the server ready to serve requests with sched over e (which sched must run
// on). It panics if either is nil (a programmer error).
func (s *Server) SetEngine(sched *engine.Scheduler, e *engine.Engine) {
	if sched == nil || e == nil {
		panic("serve: SetEngine needs both a scheduler and its engine")
	}
	s.ready.Store(&backend{sched: sched, e: e})
}

// Drain marks the server as shutting down: /health answers 503 and new generation requests get
// 503, while requests in flight go on. Call it before http.Server.Shutdown.
func (s *Server) Drain() { s.drain.Store(true) }

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint := r.URL.Path
	var h func(http.ResponseWriter, *http.Request)
	method := http.MethodPost
	switch endpoint {
	case "/v1/completions":
		h = s.handleCompletions
	case "/v1/chat/completions":
		h = s.handleChat
	case "/v1/embeddings":
		h = s.handleEmbeddings
	case "/api/embed", "/api/embeddings":
		h = s.handleOllamaEmbed
	case "/v1/models":
		h, method = s.handleModels, http.MethodGet
	case "/tokenize":
		h = s.handleTokenize
	case "/detokenize":
		h = s.handleDetokenize
	case "/health":
		h, method = s.handleHealth, http.MethodGet
	case "/metrics":
		h, method = s.handleMetrics, http.MethodGet
	case "/api/generate", "/api/chat":
		h = s.handleOllama
	case "/api/show":
		h = s.handleOllamaInfo
	case "/api/tags", "/api/ps", "/api/version":
		h, method = s.handleOllamaInfo, http.MethodGet
	default:
		endpoint = "other"
	}
	rec := &statusWriter{ResponseWriter: w}
	start := time.Now()
	defer func() { s.metrics.request(endpoint, rec.status(), time.Since(start)) }()
	fail := writeError
	if strings.HasPrefix(r.URL.Path, "/api/") { // ollama's clients read {"error": "..."}
		fail = func(w http.ResponseWriter, status int, _, _, msg string) { ollamaError(w, status, "%s", msg) }
	}
	switch {
	case h == nil:
		fail(rec, http.StatusNotFound, "invalid_request_error", "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	case r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead):
		rec.Header().Set("Allow", method)
		fail(rec, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", r.URL.Path+" accepts "+method+" only")
	case (strings.HasPrefix(endpoint, "/v1/") || strings.HasPrefix(endpoint, "/api/") || method == http.MethodPost) && !s.authorized(r):
		rec.Header().Set("WWW-Authenticate", `Bearer realm="llamacu"`)
		fail(rec, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "a valid API key is required: send it as \"Authorization: Bearer KEY\"")
	default:
		h(rec, r)
	}
}

// authorized checks the Bearer key in constant time.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" {
		return true
	}
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(auth[len(prefix):])), []byte(s.opts.APIKey)) == 1
}

// backendOrError returns the ready backend, or writes 503 and returns nil.
func (s *Server) backendOrError(w http.ResponseWriter) *backend {
	if s.drain.Load() {
		writeError(w, http.StatusServiceUnavailable, "server_error", "shutting_down", "the server is shutting down")
		return nil
	}
	b := s.ready.Load()
	if b == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "server_error", "model_loading", "the model is still loading; retry shortly")
		return nil
	}
	return b
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	status, code := "ok", http.StatusOK
	switch {
	case s.drain.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case s.ready.Load() == nil:
		status, code = "loading", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"status": status})
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	b := s.backendOrError(w)
	if b == nil {
		return
	}
	type model struct {
		ID            string `json:"id"`
		Object        string `json:"object"`
		Created       int64  `json:"created"`
		OwnedBy       string `json:"owned_by"`
		ContextLength int    `json:"context_length"`
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []model{{ID: s.opts.ModelName, Object: "model", Created: s.created, OwnedBy: "llamacu", ContextLength: b.e.Context}},
	})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var st *engine.SchedulerStats
	if b := s.ready.Load(); b != nil {
		x := b.sched.Stats()
		st = &x
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	s.metrics.write(w, st)
}

// apiError is OpenAI's error body.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func newAPIError(typ, code, msg string) apiError {
	var e apiError
	e.Error.Message, e.Error.Type, e.Error.Code = msg, typ, code
	return e
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	writeJSON(w, status, newAPIError(typ, code, msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a write error means the client has gone
}

// statusWriter records the status code for metrics and passes Flush through.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (Flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// newID returns an id like OpenAI's: prefix + 24 hex digits.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// errorFor maps a Submit error to an HTTP status and an OpenAI error type and code.
func errorFor(err error) (status int, typ, code string) {
	switch {
	case errors.Is(err, engine.ErrPromptTooLong):
		return http.StatusBadRequest, "invalid_request_error", "context_length_exceeded"
	case errors.Is(err, engine.ErrInvalidRequest):
		return http.StatusBadRequest, "invalid_request_error", "invalid_value"
	case errors.Is(err, engine.ErrQueueFull):
		return http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"
	case errors.Is(err, engine.ErrClosed):
		return http.StatusServiceUnavailable, "server_error", "shutting_down"
	}
	return http.StatusInternalServerError, "server_error", "internal_error"
}
