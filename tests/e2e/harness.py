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
              test can later run over HTTP/2 and HTTP/3 (STYLE.md rule 27).
  raw()/RawConn  exact bytes on a TCP socket, for malformed input and pipelining.

Rules kept here so every test keeps them: only 127.0.0.1 is contacted; every loop is bounded in
count and time; nothing sleeps to wait for a TTL (Outpost.advance_clock moves the node's clock,
and the origin's Date header with it); ordering uses wait_for().
"""

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
    """A port nothing listens on now and that this session has not handed out before: two
    calls in a row may otherwise get the same port from the kernel (and a node would then
    bind two of its listeners to it)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
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
# plaintext HTTP/1.1 and over TLS (HTTP/1.1, and HTTP/2 chosen by ALPN). curl() moves a URL of
# a node's plaintext port to the node's TLS port for the tls* protocols.
# OUTPOST_E2E_PROTOCOLS=1.1,tls2 narrows the set (the sanitizer pass of CI does).
PROTOCOLS = [p for p in os.environ.get("OUTPOST_E2E_PROTOCOLS", "1.1,tls1.1,tls2,2").split(",")
             if p]
PROTOCOL_IDS = {"1.1": "http1.1", "tls1.1": "https1.1", "tls2": "https2", "2": "h2c"}
_TLS_PROTOS = {"tls1.1": ["--http1.1"], "tls2": ["--http2"]}
_TLS_PORTS = {}  # plaintext port -> TLS port of the same node
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
    return _tls_url(url) if http in _TLS_PROTOS else url


def _tls_url(url):
    m = re.match(r"^http://([^/:]+):(\d+)(.*)$", url)
    if not m or int(m.group(2)) not in _TLS_PORTS:
        raise AssertionError("no TLS listener known for %s" % url)
    return "https://%s:%d%s" % (m.group(1), _TLS_PORTS[int(m.group(2))], m.group(3))


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
    the body to instead of returning it (body is then None)."""
    tmp = tempfile.mkdtemp(prefix="curl-")
    try:
        hfile = os.path.join(tmp, "h")
        bfile = output or (os.devnull if method == "HEAD" else os.path.join(tmp, "b"))
        args = ["curl", "-sS", "-g", "--path-as-is", "-D", hfile, "-o", bfile,
                "--max-time", str(timeout)]
        if http in _TLS_PROTOS:
            args += _TLS_PROTOS[http] + ["--insecure"]
            url = _tls_url(url)
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
            raise CurlError("curl %s failed (exit %d): %s" % (url, p.returncode,
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
                 debug_api=True, access_log=True, tls=True):
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.origin = origin
        self.cache_dir = self.dir / "cache"
        self.access_log = self.dir / "access.log"
        self.port = free_port()
        self.admin_port = free_port()
        self.tls_port = free_port() if tls else None
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
