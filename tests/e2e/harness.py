"""
tests/e2e/harness.py: the actor library of the end-to-end suite (STYLE.md rule 26), in the
spirit of varnishtest: a scripted origin, a spawned outpostd, real clients (curl, raw
sockets) and expectations on counters.

Actors
  Origin      a real HTTP/1.1 server on 127.0.0.1 (free port, one thread per connection),
              scripted per path with Origin.route(); records every request it receives.
  Outpost     one outpostd process started on free ports with a private cache dir; talks to
              its admin API (status, metrics, test clock, cache sync).
  curl()      runs the real curl binary; the `http` argument selects the protocol so the same
              test runs over HTTP/1.1, HTTP/2 and HTTP/3 (STYLE.md rule 27). For HTTP/3 it
              runs tests/tools/h3curl instead (Debian's curl has no HTTP/3).
  gtlsclient_get()  Debian's gtlsclient (ngtcp2), a second HTTP/3 client.
  chromium_h3_nexthop()  headless Chromium over forced QUIC; returns the page's DOM.
  raw()/RawConn  exact bytes on a TCP socket, for malformed input and pipelining.

Rules kept here so every test keeps them: only 127.0.0.1 is contacted; every loop is bounded in
count and time; nothing sleeps to wait for a TTL (Outpost.advance_clock moves the node's clock,
and the origin's Date header with it); ordering uses wait_for().
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import namedtuple
from pathlib import Path

from origin import (PIECE, Origin, Request, Route, gated_body, http_date,  # noqa: F401
                    large_body_digest, large_body_iter, pattern_bytes)

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def outpostd_path():
    return REPO / os.environ.get("OUTPOST_BUILD", "build") / "outpostd"


# --------------------------------------------------------------------------------------------
# Waiting


class WaitTimeout(AssertionError):
    pass


def wait_for(cond, timeout=10.0, interval=0.02, msg=None):
    """Poll cond() until it returns a truthy value (returned) or `timeout` seconds pass
    (AssertionError). This orders events; it is never used to let a TTL run out."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (OSError, ValueError, KeyError) as e:  # e.g. admin port not up yet
            last_exc = e
        if time.monotonic() >= deadline:
            text = msg or getattr(cond, "__name__", "condition")
            if last_exc is not None:
                text += " (last error: %r)" % (last_exc,)
            raise WaitTimeout("timed out after %.1fs waiting for %s" % (timeout, text))
        time.sleep(interval)


_GIVEN_PORTS = set()


def free_port():
    """A port nothing listens on now, over TCP nor UDP, and that this session has not handed
    out before: two calls in a row may otherwise get the same port from the kernel (and a node
    would then bind two of its listeners to it). UDP too because a node's HTTP/3 listener takes
    the number of its TLS port."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port in _GIVEN_PORTS:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((HOST, port))
        except OSError:
            continue
        _GIVEN_PORTS.add(port)
        return port
    raise AssertionError("no fresh free port after 100 tries")


# --------------------------------------------------------------------------------------------
# Responses: curl and raw parsing share this shape


class Response(namedtuple("Response", "status headers body")):
    """status (int), headers (dict: lower-case name -> list of values), body (bytes or None).
    Unpacks as (status, headers, body)."""

    def h(self, name, default=None):
        v = self.headers.get(name.lower())
        return v[0] if v else default

    @property
    def xcache(self):
        return self.h("x-cache")

    @property
    def age(self):
        a = self.h("age")
        return int(a) if a is not None else None


def parse_header_block(text):
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    status_line = lines[0]
    headers = {}
    for ln in lines[1:]:
        if not ln:
            continue
        k, _, v = ln.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status_line, headers


class CurlError(AssertionError):
    pass


# The protocols a behavioural test runs over (STYLE.md rule 27): the same test, unchanged, over
# plaintext HTTP/1.1, over TLS (HTTP/1.1, and HTTP/2 chosen by ALPN), h2c and HTTP/3. curl()
# moves a URL of a node's plaintext port to the node's TLS port for the tls* protocols, and to
# its HTTP/3 port (UDP, the same number as the TLS port) for tls3, which h3curl speaks.
# OUTPOST_E2E_PROTOCOLS=1.1,tls2 narrows the set (the sanitizer pass of CI does).
PROTOCOLS = [p for p in os.environ.get("OUTPOST_E2E_PROTOCOLS",
                                       "1.1,tls1.1,tls2,2,tls3").split(",") if p]
PROTOCOL_IDS = {"1.1": "http1.1", "tls1.1": "https1.1", "tls2": "https2", "2": "h2c",
                "tls3": "https3"}
_TLS_PROTOS = {"tls1.1": ["--http1.1"], "tls2": ["--http2"]}
_TLS_PORTS = {}  # plaintext port -> TLS port of the same node
_H3_PORTS = {}  # plaintext port -> HTTP/3 (UDP) port of the same node
_CERTS = {}


def test_certs():
    """A self-signed EC certificate for localhost and 127.0.0.1, made once per test session
    with the openssl command-line tool (a separate process; the daemon never loads OpenSSL).
    Returns (cert_path, key_path)."""
    if "pair" not in _CERTS:
        d = tempfile.mkdtemp(prefix="outpost-certs-")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "30", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _CERTS["pair"] = (cert, key)
    return _CERTS["pair"]


def client_url(url, http):
    """The URL a client of protocol `http` really uses for a node's plaintext `url`."""
    if http in _TLS_PROTOS:
        return _tls_url(url)
    if http == "tls3":
        return _h3_url(url)
    return url


def _tls_url(url):
    m = re.match(r"^http://([^/:]+):(\d+)(.*)$", url)
    if not m or int(m.group(2)) not in _TLS_PORTS:
        raise AssertionError("no TLS listener known for %s" % url)
    return "https://%s:%d%s" % (m.group(1), _TLS_PORTS[int(m.group(2))], m.group(3))


def _h3_url(url):
    """A node's plaintext URL moved to its HTTP/3 port; an https:// URL is kept as it is."""
    if url.startswith("https://"):
        return url
    m = re.match(r"^http://([^/:]+):(\d+)(.*)$", url)
    if not m or int(m.group(2)) not in _H3_PORTS:
        raise AssertionError("no HTTP/3 listener known for %s" % url)
    return "https://%s:%d%s" % (m.group(1), _H3_PORTS[int(m.group(2))], m.group(3))


def _skip(reason):
    """Skip the running test: a client it needs is missing (STYLE.md rule 27)."""
    import pytest  # here, so that the harness stays importable without pytest
    pytest.skip(reason)


def h3curl_path():
    return REPO / os.environ.get("OUTPOST_BUILD", "build") / "tools" / "h3curl"


def _h3curl():
    p = h3curl_path()
    if not os.access(p, os.X_OK):
        _skip("%s is not built: `make all` builds it when Go and Debian's quic-go are "
              "installed (scripts/deps.sh test)" % p)
    return str(p)




_CURL_PROTO_FLAGS = {
    "1.0": ["--http1.0"],
    "1.1": ["--http1.1"],
    "h1": ["--http1.1"],
    "2": ["--http2-prior-knowledge"],
    "h2": ["--http2"],
    "3": ["--http3-only"],
    "h3": ["--http3-only"],
}


def curl(url, method=None, headers=None, data=None, http="1.1", extra=(), timeout=30,
         output=None, check=True):
    """Run the real curl. Returns Response(status, headers, body): the final response (1xx
    interim heads are skipped). `headers`: dict or list of pairs; a value of None removes a
    header curl would send. `data`: bytes (sent with --data-binary). `output`: a path to write
    the body to instead of returning it (body is then None).

    http="tls3" runs tests/tools/h3curl, which takes the same options, against the node's
    HTTP/3 port (or an https:// URL as it is); the test skips if h3curl is not built. Unlike
    curl, h3curl sends no User-Agent and no Accept header of its own, and an empty value
    (v == "") of User-Agent sends none."""
    tmp = tempfile.mkdtemp(prefix="curl-")
    try:
        hfile = os.path.join(tmp, "h")
        bfile = output or (os.devnull if method == "HEAD" else os.path.join(tmp, "b"))
        args = ["curl", "-sS", "-g", "--path-as-is", "-D", hfile, "-o", bfile,
                "--max-time", str(timeout)]
        if http in _TLS_PROTOS:
            args += _TLS_PROTOS[http] + ["--insecure"]
            url = _tls_url(url)
        elif http == "tls3":
            url = _h3_url(url)
            args[0] = _h3curl()
            if "--cacert" not in extra:  # a test that brings its CA wants verification
                args.append("--insecure")
        else:
            args += _CURL_PROTO_FLAGS[http]
        if method == "HEAD":
            # --head writes the head to -o too; a HEAD body is checked with raw sockets
            args.append("--head")
        elif method:
            args += ["-X", method]
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            args += ["-H", "%s:" % k if v is None else ("%s;" % k if v == "" else
                                                         "%s: %s" % (k, v))]
        if data is not None:
            dfile = os.path.join(tmp, "d")
            with open(dfile, "wb") as f:
                f.write(data)
            args += ["--data-binary", "@" + dfile]
        args += list(extra)
        args.append(url)
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 10)
        if p.returncode != 0 and check:
            raise CurlError("%s %s failed (exit %d): %s" % (os.path.basename(args[0]), url,
                                                           p.returncode,
                                                           p.stderr.decode(errors="replace")))
        if not os.path.exists(hfile):
            return Response(0, {}, b"")
        text = open(hfile, "rb").read().decode("latin-1")
        blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
        if not blocks:
            return Response(0, {}, b"")
        status_line, hdrs = parse_header_block(blocks[-1])
        status = int(status_line.split()[1])
        body = None
        if method == "HEAD":
            body = b""
        elif output is None:
            body = open(bfile, "rb").read() if os.path.exists(bfile) else b""
        return Response(status, hdrs, body)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Two more HTTP/3 clients: gtlsclient and headless Chromium


class GtlsclientError(AssertionError):
    pass


_GTLS_STREAM = re.compile(r"^http: stream 0x([0-9a-f]+) (.*)$")
_GTLS_FIELD = re.compile(r"^\[(:?[^:]*): (.*)\]$")
_GTLS_BODY = re.compile(r"^body (\d+) bytes$")
_GTLS_CLOSED = re.compile(r"^HTTP stream (\d+) closed with error code (\d+)$")
_HEXDUMP = re.compile(r"^([0-9a-f]{8})(?:  (.*))?$")


def parse_gtlsclient_log(text):
    """gtlsclient's debug output (its stderr without -q) -> {stream id: Response}. What it
    prints, per stream (ngtcp2 0.12.1):

        http: stream 0x0 response headers started     (again for a final head after a 1xx)
        http: stream 0x0 [:status: 200]
        http: stream 0x0 [content-length: 9]
        http: stream 0x0 headers ended
        http: stream 0x0 body 9 bytes                 (one per chunk, unless --no-http-dump)
        00000000  68 65 6c 6c 6f 20 68 33  0a        |hello h3.|
        *                                             (hexdump -C: the line above repeats)
        00000009                                      (the chunk's length)
        http: stream 0x0 trailers started / [name: value] / trailers ended
        HTTP stream 0 closed with error code 256      (decimal id; 256 is H3_NO_ERROR)

    Its request heads are bare "[name: value]" lines; those, and the ngtcp2 trace lines, are
    skipped. A Response gets .trailers (dict like headers) and .stream_error (the close code,
    or None). 1xx heads are dropped, as curl() does."""
    streams = {}
    chunk = None  # the stream's body, the declared length, its start, the last 16-byte row

    def state(sid):
        return streams.setdefault(sid, {"status": None, "headers": {}, "trailers": {},
                                        "body": bytearray(), "mode": None, "error": None})

    star = False
    for line in text.splitlines():
        if chunk is not None:
            body, length, start, row = chunk
            if line == "*":
                star = True
                continue
            m = _HEXDUMP.match(line)
            if not m:
                raise ValueError("gtlsclient output: hexdump cut short by %r" % line[:100])
            off = int(m.group(1), 16)
            while star and len(body) - start < off:
                body += row[:off - (len(body) - start)]
            star = False
            if m.group(2) is None:  # the closing offset line
                if len(body) - start != length or off != length:
                    raise ValueError("gtlsclient output: a %d-byte chunk decoded to %d bytes"
                                     % (length, len(body) - start))
                chunk = None
                continue
            row = bytes.fromhex(m.group(2).split("  |", 1)[0])
            body += row
            chunk = (body, length, start, row)
            continue
        m = _GTLS_CLOSED.match(line)
        if m:
            state(int(m.group(1)))["error"] = int(m.group(2))
            continue
        m = _GTLS_STREAM.match(line)
        if not m:
            continue
        st = state(int(m.group(1), 16))
        what = m.group(2)
        if what == "response headers started":
            if st["status"] is not None and 100 <= st["status"] < 200:
                st["status"], st["headers"] = None, {}
            st["mode"] = "headers"
        elif what == "trailers started":
            st["mode"] = "trailers"
        elif what in ("headers ended", "trailers ended"):
            st["mode"] = None
        elif _GTLS_BODY.match(what):
            n = int(_GTLS_BODY.match(what).group(1))
            if n:
                chunk = (st["body"], n, len(st["body"]), b"")
        else:
            f = _GTLS_FIELD.match(what)
            if f and st["mode"] == "headers" and f.group(1) == ":status":
                st["status"] = int(f.group(2))
            elif f and st["mode"]:
                st[st["mode"]].setdefault(f.group(1).lower(), []).append(f.group(2))
    if chunk is not None:
        raise ValueError("gtlsclient output ends inside a hexdump")
    out = {}
    for sid, st in streams.items():
        r = Response(st["status"], st["headers"], bytes(st["body"]))
        r.trailers, r.stream_error = st["trailers"], st["error"]
        out[sid] = r
    return out


def _gtls_file_name(url):
    """The name gtlsclient --download gives the body of `url`: what follows the path's last
    '/', query included ("/a/b.txt?x=1" -> "b.txt?x=1"), or index.html."""
    rest = re.sub(r"^https?://[^/?#]*", "", url).split("#", 1)[0]
    return rest.rsplit("/", 1)[-1] or "index.html"


def gtlsclient_get(url, n=None, method=None, data=None, timeout=30, download_bodies=False):
    """Fetch over HTTP/3 with Debian's gtlsclient (ngtcp2's own client, independent of
    h3curl's quic-go): `gtlsclient --exit-on-all-streams-close --download=DIR HOST PORT
    URL...`. `url`: one URL or a list; a node's plaintext URL goes to its HTTP/3 port, an
    https:// URL is used as it is; all must share host and port. Every request goes on one
    QUIC connection, `n` of them (-n; the URL list wraps around), all sent at once. `method`:
    -m; `data`: bytes, the body of every request (-d). gtlsclient sends its own user-agent and
    no other header; it cannot send more.

    Returns one Response per request, in request order (stream ids 0, 4, 8, ...), with status,
    headers, trailers and body parsed from its debug output (parse_gtlsclient_log). With
    download_bodies=True the body is read from DIR instead of the hexdump (--no-http-dump: for
    large bodies); requests whose URLs end in the same file name then get the last one written.
    Raises GtlsclientError if it fails or a request gets no response: gtlsclient itself exits 0
    after a handshake timeout. The test skips if gtlsclient is not installed."""
    gtls = shutil.which("gtlsclient") or _skip("gtlsclient is not installed (ngtcp2-client; "
                                               "scripts/deps.sh test)")
    urls = [_h3_url(u) for u in ([url] if isinstance(url, str) else url)]
    m = re.match(r"^https://([^/:?#]+):(\d+)", urls[0])
    if not m or any(not u.startswith(m.group(0)) for u in urls):
        raise AssertionError("gtlsclient_get: one https://HOST:PORT for all of %s" % urls)
    count = n or len(urls)
    tmp = tempfile.mkdtemp(prefix="gtlsclient-")
    try:
        dl = os.path.join(tmp, "dl")
        os.mkdir(dl)
        args = [gtls, "--exit-on-all-streams-close", "--download=" + dl, "--no-quic-dump",
                "--timeout=%ds" % timeout, "--handshake-timeout=%ds" % min(timeout, 10)]
        if download_bodies:
            args.append("--no-http-dump")
        if n:
            args += ["-n", str(n)]
        if method:
            args += ["-m", method]
        if data is not None:
            dfile = os.path.join(tmp, "d")
            with open(dfile, "wb") as f:
                f.write(data)
            args += ["-d", dfile]
        args += [m.group(1), m.group(2)] + urls
        log = os.path.join(tmp, "log")
        with open(log, "wb") as f:
            try:
                p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=f,
                                   timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                raise GtlsclientError("gtlsclient %s: no exit within %ds" % (urls, timeout + 10))
        text = open(log, "rb").read().decode("latin-1")

        def fail(what):
            http = [l for l in text.splitlines() if l.startswith(("http:", "HTTP stream"))]
            raise GtlsclientError("gtlsclient %s: %s (exit %d); its HTTP lines:\n%s\n"
                                  "last lines:\n%s" % (urls, what, p.returncode,
                                                       "\n".join(http[-40:]),
                                                       "\n".join(text.splitlines()[-15:])))
        if p.returncode != 0:
            fail("failed")
        streams = parse_gtlsclient_log(text)
        out = []
        for i in range(count):
            r = streams.get(4 * i)
            if r is None or r.status is None:
                fail("no response on stream %d (request %d)" % (4 * i, i))
            if download_bodies:
                f = os.path.join(dl, _gtls_file_name(urls[i % len(urls)]))
                body = open(f, "rb").read() if os.path.exists(f) else b""
                trailers, err = r.trailers, r.stream_error
                r = Response(r.status, r.headers, body)
                r.trailers, r.stream_error = trailers, err
            out.append(r)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ChromiumError(AssertionError):
    pass


def cert_spki_sha256(cert_path):
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, with the openssl CLI: what
    Chromium's --ignore-certificate-errors-spki-list takes."""
    def run(args, data=None):
        return subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, check=True, timeout=30).stdout
    pub = run(["x509", "-in", str(cert_path), "-pubkey", "-noout"])
    der = run(["pkey", "-pubin", "-outform", "der"], pub)
    return base64.b64encode(run(["dgst", "-sha256", "-binary"], der)).decode()


def chromium_h3_nexthop(url, cert_path, timeout=30):
    """Load `url` in Debian's headless Chromium over HTTP/3 and return the DOM after the load
    event (--dump-dom): a page's scripts write what they see, e.g. the nextHopProtocol of
    performance.getEntriesByType('navigation'|'resource'), which is "h3" over HTTP/3.

    `url`: a node's plaintext URL (moved to its HTTP/3 port) or an https:// URL. Chromium takes
    HTTP/3 to a loopback server with a self-signed certificate only with QUIC forced on the
    origin (--origin-to-force-quic-on) and the certificate's key pinned
    (--ignore-certificate-errors-spki-list, cert_spki_sha256(cert_path)); Alt-Svc discovery
    cannot be tested so. --timeout bounds the load: without it a failed load (a wrong pin:
    ERR_QUIC_PROTOCOL_ERROR) leaves Chromium hanging; with it Chromium dumps nothing, and this
    raises ChromiumError with its "Page load failed" line. --host-resolver-rules keeps every
    name but localhost unresolved: Chromium still starts Google requests of its own (sign-in,
    time, updates) despite --disable-background-networking. The test skips if Chromium is
    not installed."""
    chromium = shutil.which("chromium") or _skip("chromium is not installed (scripts/deps.sh "
                                                 "test installs it)")
    url = _h3_url(url)
    m = re.match(r"^https://([^/?#]+)", url)
    if not m:
        raise AssertionError("chromium_h3_nexthop: not an https URL: %s" % url)
    spki = cert_spki_sha256(cert_path)
    tmp = tempfile.mkdtemp(prefix="outpost-chromium-")
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--user-data-dir=" + os.path.join(tmp, "profile"),
            "--origin-to-force-quic-on=" + m.group(1),
            "--ignore-certificate-errors-spki-list=" + spki,
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            "--timeout=%d" % (timeout * 1000), "--dump-dom", url]
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(tmp, "config"),
               XDG_CACHE_HOME=os.path.join(tmp, "cache"))
    try:
        # its own session: the browser's helper processes go with it on a timeout
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise ChromiumError("chromium %s: no exit within %ds" % (url, timeout + 30))
        errs = [l for l in err.decode(errors="replace").splitlines()
                if "ERROR:" in l and "dbus" not in l]
        if p.returncode != 0 or not out.strip():
            raise ChromiumError("chromium %s: exit %d, no DOM:\n%s" % (url, p.returncode,
                                                                      "\n".join(errs[-10:])))
        return out.decode(errors="replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Raw sockets

RawResult = namedtuple("RawResult", "data closed")


def raw(node_or_port, data, read_timeout=5.0):
    """Send exact bytes to the node's client port; read until the peer closes (closed=True) or
    `read_timeout` seconds pass without the connection closing (closed=False)."""
    port = node_or_port if isinstance(node_or_port, int) else node_or_port.port
    s = socket.create_connection((HOST, port), timeout=5)
    try:
        if data:
            s.sendall(data)
        out = bytearray()
        deadline = time.monotonic() + read_timeout
        closed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            out += d
        return RawResult(bytes(out), closed)
    finally:
        s.close()


class Incomplete(Exception):
    pass


def _parse_one(buf, pos, head_request=False, eof=False):
    """Parse one response from buf[pos:]; returns (Response-ish dict, new pos) or raises
    Incomplete."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete()
    head = buf[pos:end].decode("latin-1")
    status_line, headers = parse_header_block(head)
    parts = status_line.split(" ", 2)
    if not parts[0].startswith("HTTP/") or len(parts) < 2:
        raise ValueError("not an HTTP response: %r" % status_line[:80])
    status = int(parts[1])
    p = end + 4
    if 100 <= status < 200 or status in (204, 304) or head_request:
        return Response(status, headers, b""), p, status_line
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        body = bytearray()
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                raise Incomplete()
            size = int(buf[p:le].split(b";")[0].strip(), 16)
            p = le + 2
            if size == 0:
                while True:
                    le = buf.find(b"\r\n", p)
                    if le < 0:
                        raise Incomplete()
                    line = buf[p:le]
                    p = le + 2
                    if not line:
                        return Response(status, headers, bytes(body)), p, status_line
            if len(buf) < p + size + 2:
                raise Incomplete()
            body += buf[p:p + size]
            if buf[p + size:p + size + 2] != b"\r\n":
                raise ValueError("bad chunk framing")
            p += size + 2
    if "content-length" in headers:
        n = int(headers["content-length"][0])
        if len(buf) < p + n:
            raise Incomplete()
        return Response(status, headers, bytes(buf[p:p + n])), p + n, status_line
    if not eof:
        raise Incomplete()
    return Response(status, headers, bytes(buf[p:])), len(buf), status_line


def parse_responses(data, head_requests=()):
    """Split a raw HTTP/1.1 response stream into a list of Responses, in order. 1xx interim
    responses are included. `head_requests`: indexes (among final responses) that answer HEAD
    requests, whose bodies are absent. A truncated last response raises ValueError."""
    out = []
    pos = 0
    final_idx = 0
    while pos < len(data):
        try:
            r, pos, _ = _parse_one(data, pos, head_request=final_idx in head_requests,
                                   eof=True)
        except Incomplete:
            raise ValueError("truncated response at byte %d: %r" % (pos, data[pos:pos + 200]))
        out.append(r)
        if not 100 <= r.status < 200:
            final_idx += 1
    return out


class RawConn:
    """One client TCP connection driven byte by byte."""

    def __init__(self, node_or_port, timeout=10.0):
        port = node_or_port if isinstance(node_or_port, int) else node_or_port.port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = bytearray()
        self.timeout = timeout
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(1 << 20)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_response(self, head_request=False, timeout=None, skip_interim=True):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                r, pos, _ = _parse_one(bytes(self.buf), 0, head_request, eof=self.eof)
                del self.buf[:pos]
                if skip_interim and 100 <= r.status < 200:
                    continue
                return r
            except Incomplete:
                if self.eof:
                    raise ValueError("connection closed %s: %r" % (
                        "before a response" if not self.buf else "in the middle of a response",
                        bytes(self.buf[:200])))
                try:
                    self._fill(deadline)
                except socket.timeout:
                    raise ValueError("no complete response within %.0fs; received %r" % (
                        timeout or self.timeout, bytes(self.buf[:300])))

    def read_until(self, needle, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while needle not in self.buf:
            try:
                if self.eof or not self._fill(deadline):
                    raise ValueError("closed before %r: %r" % (needle, bytes(self.buf[:300])))
            except socket.timeout:
                raise ValueError("timed out before %r: %r" % (needle, bytes(self.buf[:300])))
        return bytes(self.buf)

    def read_at_least(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            try:
                if self.eof or not self._fill(deadline):
                    break
            except socket.timeout:
                break
        return bytes(self.buf)

    def wait_closed(self, timeout=5.0):
        """True if the peer closes within `timeout` (extra bytes read meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except socket.timeout:
                return False
            except OSError:
                return True
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def get_req(path, host="localhost", extra="", version="HTTP/1.1", method="GET"):
    """Bytes of a simple request."""
    return ("%s %s %s\r\nHost: %s\r\n%s\r\n" % (method, path, version, host, extra)).encode()


# --------------------------------------------------------------------------------------------
# The node


def parse_metrics(text):
    """Prometheus text format -> {"name{k="v",...}": float}, labels sorted by name."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$', line)
        if not m:
            raise ValueError("unparsable metrics line: %r" % line)
        name, labels_text, value = m.group(1), m.group(3), m.group(4)
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                 labels_text or ""))
        key = name
        if labels:
            key += "{" + ",".join('%s="%s"' % (k, labels[k]) for k in sorted(labels)) + "}"
        out[key] = float(value)
    return out


def split_key(key):
    m = re.match(r'^([^{]+)(\{(.*)\})?$', key)
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
    return m.group(1), labels


def metric_sum(metrics, name, labels=None):
    """Sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    for k, v in metrics.items():
        n, ls = split_key(k)
        if n != name:
            continue
        if labels and any(ls.get(a) != str(b) for a, b in labels.items()):
            continue
        total += v
    return total


class OutpostError(AssertionError):
    pass


class Outpost:
    """One outpostd process. Use spawn_outpost() (or the fixture of the same name)."""

    def __init__(self, tmp_path, origin=None, extra_args=(), config=None, workers=1,
                 debug_api=True, access_log=True, tls=True, h3=None):
        """h3: an HTTP/3 listener (--h3-listen) on the UDP port of the number of the TLS port,
        with the same certificate. None (the default) means on when tls is."""
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.origin = origin
        self.cache_dir = self.dir / "cache"
        self.access_log = self.dir / "access.log"
        self.port = free_port()
        self.admin_port = free_port()
        self.tls_port = free_port() if tls else None
        if h3 and not tls:
            raise ValueError("h3 needs tls: HTTP/3 shares the TLS certificate and port number")
        if h3 is None:
            h3 = tls
        self.h3_port = self.tls_port if h3 else None
        self.proc = None
        self.stderr_path = self.dir / "outpostd.stderr"
        self.stdout_path = self.dir / "outpostd.stdout"
        self.starts = 0
        self.expected_exit = False
        args = [str(outpostd_path())]
        if config is not None:
            cf = self.dir / "outpost.conf"
            cf.write_text(config)
            args += ["-c", str(cf)]
        args += ["--listen", "%s:%d" % (HOST, self.port),
                 "--admin", "%s:%d" % (HOST, self.admin_port),
                 "--cache-dir", str(self.cache_dir)]
        if tls:
            cert, key = test_certs()
            args += ["--tls-listen", "%s:%d" % (HOST, self.tls_port), "--cert", cert,
                     "--key", key]
            _TLS_PORTS[self.port] = self.tls_port
        if h3:
            args += ["--h3-listen", "%s:%d" % (HOST, self.h3_port)]
            _H3_PORTS[self.port] = self.h3_port
        if workers is not None:
            args += ["--workers", str(workers)]
        if origin is not None:
            args += ["--origin", origin.url]
        if debug_api:
            args += ["--set", "debug_api=on"]
        if access_log:
            args += ["--set", "access_log=%s" % self.access_log]
        args += list(extra_args)
        self.args = args

    # process lifecycle
    def start(self, timeout=10.0):
        if not outpostd_path().exists():
            raise OutpostError("%s does not exist: run `make all` first" % outpostd_path())
        self.starts += 1
        errf = open(self.stderr_path, "ab")
        outf = open(self.stdout_path, "ab")
        errf.write(("\n=== start %d: %s\n" % (self.starts, " ".join(self.args))).encode())
        errf.flush()
        self.proc = subprocess.Popen(self.args, stdout=outf, stderr=errf,
                                     stdin=subprocess.DEVNULL, cwd=str(self.dir))
        errf.close()
        outf.close()
        self.expected_exit = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise OutpostError("outpostd exited with status %s while starting:\n%s"
                                   % (self.proc.returncode, self.stderr_text()))
            try:
                st, _, _ = self.admin_get("/status", timeout=1)
                if st == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise OutpostError("outpostd did not answer GET /status on the admin port "
                                   "within %.0fs:\n%s" % (timeout, self.stderr_text()))
            time.sleep(0.05)

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to `timeout` (README: in-flight requests get 10 s, then the writer
        flushes), then SIGKILL. Returns the exit status; raises if the
        node had to be killed or died by itself (a crash)."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is not None:
            if self.expected_exit:
                return p.returncode
            raise OutpostError("outpostd died during the test (status %s):\n%s"
                               % (p.returncode, self.stderr_text()))
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            raise OutpostError("outpostd did not exit within %.0fs of SIGTERM:\n%s"
                               % (timeout, self.stderr_text()))
        if rc != 0:
            raise OutpostError("outpostd exited with status %s after SIGTERM:\n%s"
                               % (rc, self.stderr_text()))
        return rc

    def kill9(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        try:
            p.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)

    def restart(self, kill=False):
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again: same args, same cache."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    # client side
    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def get(self, path, **kw):
        return curl(self.url(path), **kw)

    # admin API
    def _admin(self, method, path, timeout=10):
        s = socket.create_connection((HOST, self.admin_port), timeout=timeout)
        try:
            s.sendall(("%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                       "Content-Length: 0\r\n\r\n" % (method, path, HOST, self.admin_port))
                      .encode())
            out = bytearray()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                d = s.recv(1 << 20)
                if not d:
                    break
                out += d
                try:
                    rs = parse_responses(bytes(out))
                    if rs and not 100 <= rs[-1].status < 200:
                        return rs[-1]
                except ValueError:
                    continue
            rs = parse_responses(bytes(out))
            if not rs:
                raise OSError("empty admin answer")
            return rs[-1]
        finally:
            s.close()

    def admin_get(self, path, timeout=10):
        return self._admin("GET", path, timeout)

    def admin_post(self, path, timeout=30):
        return self._admin("POST", path, timeout)

    def status(self):
        r = self.admin_get("/status")
        assert r.status == 200, r
        return json.loads(r.body)

    def metrics(self):
        r = self.admin_get("/metrics")
        assert r.status == 200, "GET /metrics: %d %r" % (r.status, r.body[:200])
        return parse_metrics(r.body.decode())

    def metric(self, name, labels=None):
        return metric_sum(self.metrics(), name, labels)

    def advance_clock(self, seconds):
        r = self.admin_post("/debug/clock?advance=%d" % seconds)
        assert r.status in (200, 204), "POST /debug/clock: %d %r" % (r.status, r.body)
        if self.origin is not None:
            self.origin.clock_offset += seconds

    def cache_sync(self):
        r = self.admin_post("/debug/cache-sync")
        assert r.status in (200, 204), "POST /debug/cache-sync: %d %r" % (r.status, r.body)

    # introspection
    def access_log_lines(self):
        try:
            return [l for l in self.access_log.read_text(errors="replace").splitlines() if l]
        except FileNotFoundError:
            return []

    def stderr_text(self, limit=20000):
        try:
            t = self.stderr_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return t[-limit:]

    def _proc_status(self, pid):
        vals = {}
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if v.strip().endswith("kB"):
                    vals[k] = int(v.split()[0])
        return vals

    def _pids(self):
        pids = [self.proc.pid]
        for d in os.listdir("/proc"):  # worker processes, if the node forks any
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            pids.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def rss_kb(self):
        """VmRSS of the node (and of any child process), in KiB."""
        return sum(self._proc_status(p).get("VmRSS", 0) for p in self._pids())

    def rss_detail(self):
        """(VmRSS, RssAnon, RssFile) in KiB: RssFile counts mapped cache file pages."""
        t = [0, 0, 0]
        for p in self._pids():
            s = self._proc_status(p)
            t[0] += s.get("VmRSS", 0)
            t[1] += s.get("RssAnon", 0)
            t[2] += s.get("RssFile", 0)
        return tuple(t)


def spawn_outpost(tmp_path, origin=None, extra_args=(), config=None, **kw):
    """Start a node on free ports with tmp_path/cache as its cache and wait until it answers
    GET /status (10 s). The caller stops it (the fixture of the same name does)."""
    return Outpost(tmp_path, origin, extra_args, config, **kw).start()


def expect_counter(node, name, value, labels=None, timeout=5.0):
    """Wait until the sum of the series `name` matching `labels` equals `value` (metrics may be
    updated a moment after the response is sent), then assert it."""
    seen = []

    def ok():
        v = node.metric(name, labels)
        seen[:] = [v]
        return v == value

    try:
        wait_for(ok, timeout)
    except WaitTimeout:
        raise AssertionError("%s%s = %s, expected %s" % (name, labels or "", seen[0] if seen
                                                         else "?", value))
