// h3curl: a small curl-like HTTP/3 client for Outpost's end-to-end tests.
//
// Debian 12's curl has no HTTP/3 and its gtlsclient cannot send request headers, so the
// behavioural tests run over HTTP/3 with this program instead. It is built on Debian's
// quic-go (QUIC, TLS 1.3 and the http3 RoundTripper): an HTTP/3 stack independent of the
// ngtcp2/nghttp3 one inside outpostd. tests/e2e/harness.py runs it exactly as it runs curl:
//
//	h3curl [-k] [-X METHOD] [-H 'Name: value']... [--data-binary @FILE|DATA] [-D FILE]
//	       [-o FILE] [--max-time SECS] [-I] [-n N] https://HOST:PORT/PATH
//
// What goes on the wire is what the command line says and nothing more: no User-Agent, no
// Accept, no Accept-Encoding (quic-go's transparent gzip is off), only the pseudo-headers and
// the content-length of a request body that quic-go always writes. The path is sent as typed
// (curl's --path-as-is and -g), redirects are not followed, and any HTTP response, whatever
// its status, exits 0. -D writes the final response head the way curl does for HTTP/3
// ("HTTP/3 200", then "name: value" lines, then an empty line, all CRLF); header names are
// lowercase as on the wire, sorted by name, with the values of one name in received order
// (Go's header map does not keep the order across names). An interim 1xx response is an
// error: quic-go 0.29 would hand it over as the final one and drop the real final head.
//
// -n N sends the request N times, one after the other, on one QUIC connection, and writes
// only the last response (the connection reuse test of a cache: MISS, then HIT).
//
// Exit codes follow curl's where one fits: 2 bad usage, 7 no connection (dial failure),
// 23 cannot write output, 26 cannot read the request body, 28 timeout (--max-time, or the
// handshake or the connection going idle), 35 TLS handshake failure, 56 any other transport
// error (reset stream, connection closed by the peer, malformed response).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lucas-clemente/quic-go"
	"github.com/lucas-clemente/quic-go/http3"
)

const (
	exitUsage     = 2
	exitConnect   = 7
	exitWrite     = 23
	exitRead      = 26
	exitTimeout   = 28
	exitHandshake = 35
	exitRecv      = 56
)

type header struct {
	name  string
	value string
}

type options struct {
	method   string
	headers  []header
	data     string
	hasData  bool
	stdin    []byte // the body read from stdin (--data-binary @-), for every request
	dump     string
	output   string
	maxTime  time.Duration
	insecure bool
	cacert   string
	head     bool
	repeat   int
	rawURL   string
	resolve  map[string]string // "host:port" -> "addr:port" (curl's --resolve)
}

// failure is an error with the exit code it maps to.
type failure struct {
	code int
	err  error
}

func (f *failure) Error() string { return f.err.Error() }

func fail(code int, format string, a ...interface{}) *failure {
	return &failure{code, fmt.Errorf(format, a...)}
}

func usage(format string, a ...interface{}) *failure {
	return fail(exitUsage, format+" (usage: h3curl [-k] [-X METHOD] [-H 'Name: value']... "+
		"[--data-binary @FILE|DATA] [-D FILE] [-o FILE] [--max-time SECS] [-I] [-n N] URL)",
		a...)
}

// parseArgs reads curl's spelling of the options it supports: "-X GET", "--max-time 5" and
// "--max-time=5"; the flags -s, -S, -sS, -g, --path-as-is, --http3 and --http3-only are
// accepted and ignored (they describe what h3curl always does).
func parseArgs(args []string) (*options, error) {
	o := &options{maxTime: 0, repeat: 1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := a, "", false
		if strings.HasPrefix(a, "--") {
			if eq := strings.IndexByte(a, '='); eq > 0 {
				name, val, hasVal = a[:eq], a[eq+1:], true
			}
		}
		next := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", usage("%s needs a value", name)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch name {
		case "-X", "--request":
			o.method, err = next()
		case "-H", "--header":
			if v, err = next(); err == nil {
				err = o.addHeader(v)
			}
		case "--data-binary":
			o.data, err = next()
			o.hasData = true
		case "-D", "--dump-header":
			o.dump, err = next()
		case "-o", "--output":
			o.output, err = next()
		case "--cacert":
			o.cacert, err = next()
		case "--resolve":
			if v, err = next(); err == nil {
				// HOST:PORT:ADDR, as curl spells it; the name stays the SNI and :authority
				p := strings.SplitN(v, ":", 3)
				if len(p) != 3 {
					return nil, usage("--resolve %q: expected HOST:PORT:ADDR", v)
				}
				if o.resolve == nil {
					o.resolve = map[string]string{}
				}
				o.resolve[p[0]+":"+p[1]] = net.JoinHostPort(p[2], p[1])
			}
		case "-m", "--max-time":
			if v, err = next(); err == nil {
				secs, perr := strconv.ParseFloat(v, 64)
				if perr != nil || secs <= 0 {
					return nil, usage("bad --max-time %q", v)
				}
				o.maxTime = time.Duration(secs * float64(time.Second))
			}
		case "-n":
			if v, err = next(); err == nil {
				n, perr := strconv.Atoi(v)
				if perr != nil || n < 1 {
					return nil, usage("bad -n %q", v)
				}
				o.repeat = n
			}
		case "-k", "--insecure":
			o.insecure = true
		case "-I", "--head":
			o.head = true
		case "-s", "-S", "-sS", "-Ss", "--silent", "--show-error", "-g", "--globoff",
			"--path-as-is", "--http3", "--http3-only":
		default:
			if strings.HasPrefix(a, "-") && a != "-" {
				return nil, usage("unknown option %s", a)
			}
			if o.rawURL != "" {
				return nil, usage("one URL only")
			}
			o.rawURL = a
		}
		if err != nil {
			return nil, err
		}
	}
	if o.rawURL == "" {
		return nil, usage("no URL")
	}
	return o, nil
}

// addHeader takes curl's -H forms: "Name: value" adds a header, "Name;" adds one with an
// empty value, and "Name:" removes a header curl would add by itself; h3curl adds none, so it
// drops the -H lines of that name given before it.
func (o *options) addHeader(h string) error {
	if strings.HasSuffix(h, ";") && !strings.Contains(h, ":") {
		o.headers = append(o.headers, header{strings.TrimSuffix(h, ";"), ""})
		return nil
	}
	colon := strings.IndexByte(h, ':')
	if colon <= 0 {
		return usage("bad header %q: want 'Name: value'", h)
	}
	name := h[:colon]
	value := strings.TrimSpace(h[colon+1:])
	if value == "" {
		kept := o.headers[:0]
		for _, x := range o.headers {
			if !strings.EqualFold(x.name, name) {
				kept = append(kept, x)
			}
		}
		o.headers = kept
		return nil
	}
	o.headers = append(o.headers, header{name, value})
	return nil
}

// requestURL splits an https URL by hand so that the path goes out exactly as typed: Go's
// url.URL would re-escape it. The fragment is not sent, as with curl.
func requestURL(raw string) (*url.URL, error) {
	const scheme = "https://"
	if !strings.HasPrefix(strings.ToLower(raw), scheme) {
		return nil, usage("only https:// URLs: %q", raw)
	}
	rest := raw[len(scheme):]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	u := &url.URL{Scheme: "https", Host: rest[:end]}
	if u.Host == "" {
		return nil, usage("no host in %q", raw)
	}
	path := rest[end:]
	if q := strings.IndexByte(path, '?'); q >= 0 {
		u.RawQuery = path[q+1:]
		u.ForceQuery = u.RawQuery == ""
		path = path[:q]
	}
	if path == "" {
		path = "/"
	}
	// RequestURI() returns Opaque as it is (plus the query): the :path quic-go sends.
	u.Opaque = path
	return u, nil
}

func (o *options) requestMethod() string {
	switch {
	case o.method != "":
		return o.method
	case o.head:
		return http.MethodHead
	case o.hasData:
		return http.MethodPost
	}
	return http.MethodGet
}

// requestBody returns a fresh body for one request and its length (-1 for none).
func (o *options) requestBody() (io.ReadCloser, int64, error) {
	if !o.hasData {
		return nil, -1, nil
	}
	if !strings.HasPrefix(o.data, "@") {
		return io.NopCloser(strings.NewReader(o.data)), int64(len(o.data)), nil
	}
	name := o.data[1:]
	if name == "-" {
		if o.stdin == nil {
			b, err := io.ReadAll(os.Stdin)
			if err != nil {
				return nil, 0, fail(exitRead, "reading the request body from stdin: %v", err)
			}
			o.stdin = b
		}
		return io.NopCloser(bytes.NewReader(o.stdin)), int64(len(o.stdin)), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, fail(exitRead, "request body: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fail(exitRead, "request body: %v", err)
	}
	return f, st.Size(), nil
}

func (o *options) newRequest(ctx context.Context, u *url.URL) (*http.Request, error) {
	body, n, err := o.requestBody()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, o.requestMethod(), "https://"+u.Host+"/", nil)
	if err != nil {
		return nil, usage("%v", err)
	}
	copied := *u
	req.URL = &copied
	if body != nil {
		req.Body = body
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
	}
	// quic-go writes "user-agent: quic-go HTTP/3" unless the request has one; an empty value
	// makes it write none.
	req.Header["User-Agent"] = []string{""}
	for _, h := range o.headers {
		if strings.EqualFold(h.name, "host") {
			req.Host = h.value // :authority
			continue
		}
		if strings.EqualFold(h.name, "user-agent") {
			delete(req.Header, "User-Agent")
		}
		// Not canonicalised: quic-go lowercases names when it encodes them.
		req.Header[h.name] = append(req.Header[h.name], h.value)
	}
	return req, nil
}

// classify maps a transport error to curl's exit code.
func classify(ctx context.Context, err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	var te *quic.TransportError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var op *net.OpError
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return fail(exitTimeout, "timeout: %v", err)
	case errors.As(err, &idle), errors.As(err, &hs):
		return fail(exitTimeout, "%v", err)
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		return fail(exitHandshake, "TLS handshake: %v", err)
	case errors.As(err, &op) && (op.Op == "dial" || op.Op == "listen"):
		return fail(exitConnect, "%v", err)
	}
	return fail(exitRecv, "%v", err)
}

// dumpHead is the response head as curl -D writes it for HTTP/3.
func dumpHead(rsp *http.Response) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/3 %d\r\n", rsp.StatusCode)
	names := make([]string, 0, len(rsp.Header))
	for k := range rsp.Header {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		return strings.ToLower(names[i]) < strings.ToLower(names[j])
	})
	for _, k := range names {
		for _, v := range rsp.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", strings.ToLower(k), v)
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func writeTo(path string, data []byte) error {
	if path == "-" {
		_, err := os.Stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// fetch sends the request once and reads the whole response. quic-go cannot tell an
// interim response from the final one (see the top of the file), so a 1xx is an error.
func fetch(ctx context.Context, rt *http3.RoundTripper, o *options, u *url.URL) (
	*http.Response, []byte, error) {
	req, err := o.newRequest(ctx, u)
	if err != nil {
		return nil, nil, err
	}
	rsp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer rsp.Body.Close()
	if rsp.StatusCode >= 100 && rsp.StatusCode < 200 {
		return nil, nil, fail(exitRecv, "interim response %d: quic-go 0.29 cannot read "+
			"past it", rsp.StatusCode)
	}
	var body []byte
	if req.Method != http.MethodHead {
		if body, err = io.ReadAll(rsp.Body); err != nil {
			return nil, nil, err
		}
	}
	return rsp, body, nil
}

func run(o *options) error {
	u, err := requestURL(o.rawURL)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if o.maxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.maxTime)
		defer cancel()
	}
	tlsConf := &tls.Config{InsecureSkipVerify: o.insecure}
	if o.cacert != "" {
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return fail(exitRead, "--cacert: %v", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return fail(exitRead, "--cacert %s: no PEM certificate", o.cacert)
		}
	}
	if kl := os.Getenv("SSLKEYLOGFILE"); kl != "" {
		f, err := os.OpenFile(kl, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			defer f.Close()
			tlsConf.KeyLogWriter = f
		}
	}
	qconf := &quic.Config{}
	if o.maxTime > 0 {
		// quic-go's own 5 s handshake limit would otherwise win over a longer --max-time
		qconf.HandshakeIdleTimeout = o.maxTime
	}
	rt := &http3.RoundTripper{
		DisableCompression: true,
		TLSClientConfig:    tlsConf,
		QuicConfig:         qconf,
		Dial: func(ctx context.Context, addr string, tc *tls.Config,
			qc *quic.Config) (quic.EarlyConnection, error) {
			if to, ok := o.resolve[addr]; ok {
				// the certificate is verified for the name, not the address dialled
				if tc.ServerName == "" {
					tc = tc.Clone()
					tc.ServerName, _, _ = net.SplitHostPort(addr)
				}
				addr = to
			}
			return quic.DialAddrEarlyContext(ctx, addr, tc, qc)
		},
	}
	defer rt.Close()

	var rsp *http.Response
	var body []byte
	for i := 0; i < o.repeat; i++ {
		if rsp, body, err = fetch(ctx, rt, o, u); err != nil {
			return classify(ctx, err)
		}
	}
	if o.dump != "" {
		if err := writeTo(o.dump, dumpHead(rsp)); err != nil {
			return fail(exitWrite, "-D: %v", err)
		}
	}
	out := o.output
	if out == "" {
		out = "-"
	}
	if o.head {
		body = dumpHead(rsp) // curl -I writes the head where the body would go
	}
	if err := writeTo(out, body); err != nil {
		return fail(exitWrite, "-o: %v", err)
	}
	return nil
}

func main() {
	if os.Getenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING") == "" {
		// the UDP buffer size warning is noise in every test's stderr
		os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	o, err := parseArgs(os.Args[1:])
	if err == nil {
		err = run(o)
	}
	if err != nil {
		code := exitRecv
		var f *failure
		if errors.As(err, &f) {
			code = f.code
		}
		fmt.Fprintf(os.Stderr, "h3curl: %v\n", err)
		os.Exit(code)
	}
}
