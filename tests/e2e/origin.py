"""
tests/e2e/origin.py: the scripted origin of the end-to-end suite: a real HTTP/1.1 server on
127.0.0.1 (free port, an accept thread plus one thread per connection, keep-alive), scripted per
path, recording every request it receives. Also the deterministic bodies the tests check
byte for byte (pattern_bytes, large_body_iter).

It is deliberately its own socket server rather than http.server: tests need exact control of
framing (chunked or not, streamed from an iterator, cut mid-body, reset), of timing (a gate that
holds a response, delays between pieces) and of what was received (chunked request bodies,
Expect: 100-continue).
"""

import hashlib
import re
import socket
import struct
import threading
import time
from email.utils import formatdate

HOST = "127.0.0.1"


def http_date(t):
    return formatdate(t, usegmt=True)


def wait_for(cond, timeout=10.0, interval=0.02, msg=None):
    from harness import wait_for as wf
    return wf(cond, timeout, interval, msg)


# --------------------------------------------------------------------------------------------
# Deterministic bodies


def pattern_bytes(seed, n):
    """n bytes that depend on `seed` (a string) and on every offset: a body a test can check
    byte for byte without keeping the expected copy anywhere but here."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(block + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


PIECE = 64 * 1024
_BASE_PIECE = pattern_bytes("outpost-large", PIECE)


def large_body_iter(total, piece=PIECE, group=16):
    """Generate `total` bytes of a deterministic pattern without holding them: each 64 KiB
    piece starts with its own index, so a dropped, repeated or reordered piece changes the
    checksum. Yields groups of pieces (1 MiB by default) to keep the origin fast."""
    sent = 0
    idx = 0
    while sent < total:
        buf = bytearray()
        for _ in range(group):
            if sent + len(buf) >= total:
                break
            p = struct.pack(">Q", idx) + _BASE_PIECE[8:piece]
            idx += 1
            buf += p
        take = min(len(buf), total - sent)
        sent += take
        yield bytes(buf[:take])


def large_body_digest(total):
    h = hashlib.sha256()
    for b in large_body_iter(total):
        h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The scripted origin


class Request:
    """One request as the origin received it."""

    def __init__(self, method, target, version, headers, body, conn_id):
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.version = version
        self.headers = headers  # list of (name, value), as received
        self.body = body
        self.conn_id = conn_id
        self.time = time.monotonic()
        self.seq = 0

    def header(self, name, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def __repr__(self):
        return "<Request %s %s %d body bytes>" % (self.method, self.target, len(self.body))


class Route:
    def __init__(self, status=200, headers=None, body=b"", delay=0.0, chunked=False,
                 gate=None, etag=None, last_modified=None, action=None, body_delay=0.0,
                 length=None, ranges=False):
        self.status = status
        self.headers = dict(headers or {})
        self.body = body
        self.delay = delay
        self.chunked = chunked
        self.gate = gate
        self.etag = etag
        self.last_modified = last_modified
        self.action = action  # None | "close" | "reset" | "close_mid_body"
        self.body_delay = body_delay
        self.length = length
        self.ranges = ranges


class _Abort(Exception):
    pass


def _etag_matches(inm, etag):
    if inm is None or etag is None:
        return False
    if inm.strip() == "*":
        return True
    weak = lambda t: t.strip()[2:] if t.strip().startswith("W/") else t.strip()
    return any(weak(t) == weak(etag) for t in inm.split(","))


def _parse_http_date(s):
    from email.utils import parsedate_to_datetime
    try:
        return parsedate_to_datetime(s).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class Origin:
    """A scripted HTTP/1.1 origin on 127.0.0.1.

    route(path, status=200, headers={...}, body=b"..." | callable(request) -> (status, headers,
    body) | iterable, delay=0, chunked=False, gate=threading.Event(), etag=, last_modified=,
    action="close"|"reset"|"close_mid_body", body_delay=, length=, ranges=False)

    Paths without a route get 200, `Cache-Control: max-age=60` and a body unique per request:
    b"<path> #<n>". Every request is recorded; count(path) / requests(path) read them.
    A body may be an iterator (streamed, never held whole); with no `length` it is sent
    chunked. A route's `gate` holds the response head until the test sets it. With `etag`
    or `last_modified`, matching If-None-Match / If-Modified-Since get a 304.
    """

    GATE_TIMEOUT = 60.0

    def __init__(self, tls=None):
        """`tls`: (cert_path, key_path) to serve HTTPS (for bridging tests)."""
        self.port = None
        self._ssl = None
        if tls is not None:
            import ssl
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.load_cert_chain(tls[0], tls[1])
        self.clock_offset = 0.0  # moved with Outpost.advance_clock so Date stays consistent
        self._routes = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._log = []
        self._heads = []
        self._inflight = {}
        self._max_inflight = {}
        self._conns = set()
        self._conn_seq = 0
        self._default_seq = 0
        self._sock = None
        self._stop = threading.Event()
        self._thread = None
        self.errors = []  # exceptions inside handlers: a test may assert it is empty

    # lifecycle
    def start(self, port=0):
        """Listen on `port` (0: a free one). A test that brings an origin back after
        shutdown() starts a new Origin on the old one's port."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        s.listen(256)
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="origin-accept",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self):
        """Stop listening and close every connection: the origin is down (connect refused)."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._sock:
            self._sock.close()
            self._sock = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    stop = shutdown

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self._ssl else "http", HOST, self.port)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def now(self):
        """The origin's clock: real time plus the offset the test clock has moved."""
        return time.time() + self.clock_offset

    # scripting
    def route(self, path, status=200, headers=None, body=b"", **kw):
        r = Route(status=status, headers=headers, body=body, **kw)
        with self._lock:
            self._routes[path] = r
        return r

    # observation
    def requests(self, path=None):
        with self._lock:
            return [r for r in self._log if path is None or r.path == path]

    def count(self, path=None):
        return len(self.requests(path))

    def total(self):
        return self.count(None)

    def heads_seen(self):
        """Request heads received, including those whose body never completed."""
        with self._lock:
            return list(self._heads)

    def last(self, path=None):
        rs = self.requests(path)
        return rs[-1] if rs else None

    def inflight(self, path):
        with self._lock:
            return self._inflight.get(path, 0)

    def max_inflight(self, path):
        with self._lock:
            return self._max_inflight.get(path, 0)

    def wait_count(self, path, n, timeout=10.0):
        wait_for(lambda: self.count(path) >= n, timeout,
                 msg="origin to receive %d request(s) for %s (has %d)" % (n, path,
                                                                        self.count(path)))

    # server
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._conn_seq += 1
                cid = self._conn_seq
                self._conns.add(c)
            threading.Thread(target=self._serve_conn, args=(c, cid), name="origin-conn",
                             daemon=True).start()

    def _recv_head(self, c, buf):
        deadline = time.monotonic() + 60
        while b"\r\n\r\n" not in buf:
            if len(buf) > 1 << 20 or time.monotonic() > deadline:
                raise _Abort()
            d = c.recv(65536)
            if not d:
                raise _Abort()
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head, rest

    def _recv_exact(self, c, buf, n):
        out = bytearray(buf[:n])
        rest = buf[n:]
        while len(out) < n:
            d = c.recv(min(1 << 20, n - len(out)))
            if not d:
                raise _Abort()
            out += d
        return bytes(out), rest

    def _recv_line(self, c, buf):
        while b"\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                raise _Abort()
            buf += d
            if len(buf) > 1 << 16 and b"\r\n" not in buf:
                raise _Abort()
        line, rest = buf.split(b"\r\n", 1)
        return line, rest

    def _recv_chunked(self, c, buf):
        body = bytearray()
        while True:
            line, buf = self._recv_line(c, buf)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Abort()
            if size == 0:
                while True:  # trailers
                    line, buf = self._recv_line(c, buf)
                    if line == b"":
                        return bytes(body), buf
            data, buf = self._recv_exact(c, buf, size)
            body += data
            crlf, buf = self._recv_exact(c, buf, 2)
            if crlf != b"\r\n":
                raise _Abort()

    def _serve_conn(self, c, cid):
        buf = b""
        try:
            c.settimeout(120)
            if self._ssl is not None:
                try:
                    c = self._ssl.wrap_socket(c, server_side=True)
                except OSError:
                    return  # the client refused our certificate (a verification test)
            while not self._stop.is_set():
                try:
                    head, buf = self._recv_head(c, buf)
                except (_Abort, OSError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                method, target, version = parts
                headers = []
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers.append((k.strip(), v.strip()))
                hl = {k.lower(): v for k, v in headers}
                with self._lock:
                    self._heads.append((method, target))  # before its body is read
                if hl.get("expect", "").lower() == "100-continue":
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in hl.get("transfer-encoding", "").lower():
                    body, buf = self._recv_chunked(c, buf)
                elif "content-length" in hl:
                    body, buf = self._recv_exact(c, buf, int(hl["content-length"]))
                else:
                    body = b""
                req = Request(method, target, version, headers, body, cid)
                path = req.path
                with self._cv:
                    self._log.append(req)
                    req.seq = len(self._log)  # 1-based, over all paths, in arrival order
                    self._inflight[path] = self._inflight.get(path, 0) + 1
                    self._max_inflight[path] = max(self._max_inflight.get(path, 0),
                                                   self._inflight[path])
                    self._cv.notify_all()
                try:
                    keep = self._respond(c, req, hl)
                finally:
                    with self._lock:
                        self._inflight[path] -= 1
                close_req = ("close" in hl.get("connection", "").lower()
                             or (version == "HTTP/1.0"
                                 and "keep-alive" not in hl.get("connection", "").lower()))
                if not keep or close_req:
                    return
        except _Abort:
            return
        except OSError:
            return
        except Exception as e:  # a bug in a test's handler: keep it for the test to see
            self.errors.append(e)
            return
        finally:
            with self._lock:
                self._conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _respond(self, c, req, hl):
        with self._lock:
            route = self._routes.get(req.path)
            if route is None:
                self._default_seq += 1
                n = self._default_seq
        if route is None:
            body = ("%s #%d" % (req.target, n)).encode()
            return self._send(c, req, 200, {"Cache-Control": "max-age=60"}, body, False, 0)
        if route.gate is not None:
            if not route.gate.wait(self.GATE_TIMEOUT):
                raise _Abort()
        if route.delay:
            time.sleep(route.delay)
        if route.action == "close":
            c.close()
            raise _Abort()
        if route.action == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            raise _Abort()
        status, headers, body = route.status, dict(route.headers), route.body
        if callable(body) and not isinstance(body, (bytes, bytearray)):
            status, headers, body = body(req)
            headers = dict(headers or {})
        if route.etag is not None:
            headers.setdefault("ETag", route.etag)
        if route.last_modified is not None:
            headers.setdefault("Last-Modified", route.last_modified)
        if status == 200 and req.method in ("GET", "HEAD"):
            inm = req.header("If-None-Match")
            ims = req.header("If-Modified-Since")
            not_modified = False
            if inm is not None:
                not_modified = _etag_matches(inm, headers.get("ETag"))
            elif ims is not None and headers.get("Last-Modified"):
                a, b = _parse_http_date(ims), _parse_http_date(headers["Last-Modified"])
                not_modified = a is not None and b is not None and b <= a
            if not_modified:
                h304 = {k: v for k, v in headers.items()
                        if k.lower() not in ("content-length", "content-type")}
                return self._send(c, req, 304, h304, b"", False, 0)
            rng = req.header("Range")
            if route.ranges and rng and isinstance(body, (bytes, bytearray)):
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if m:
                    a = int(m.group(1))
                    b = int(m.group(2)) if m.group(2) else len(body) - 1
                    b = min(b, len(body) - 1)
                    if a <= b:
                        headers["Content-Range"] = "bytes %d-%d/%d" % (a, b, len(body))
                        return self._send(c, req, 206, headers, body[a:b + 1], False, 0)
        return self._send(c, req, status, headers, body, route.chunked, route.body_delay,
                          route.length, route.action)

    def _send(self, c, req, status, headers, body, chunked, body_delay, length=None,
              action=None):
        hdrs = {"Date": http_date(self.now()), "Server": "scripted-origin"}
        hdrs.update(headers)
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        is_bytes = isinstance(body, (bytes, bytearray))
        no_body = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if is_bytes and not chunked:
            if status not in (204, 304):
                hdrs.setdefault("Content-Length", str(len(body)))
        elif length is not None:
            hdrs.setdefault("Content-Length", str(length))
            chunked = False
        else:
            chunked = True
            if not no_body:
                hdrs["Transfer-Encoding"] = "chunked"
        head = "HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status"))
        for k, v in hdrs.items():
            for vv in (v if isinstance(v, (list, tuple)) else [v]):
                head += "%s: %s\r\n" % (k, vv)
        head += "\r\n"
        c.sendall(head.encode("latin-1"))
        if no_body:
            return True
        pieces = [body] if is_bytes and not chunked else (
            [body[i:i + 4096] for i in range(0, len(body), 4096)] if is_bytes else body)
        sent = 0
        for i, p in enumerate(pieces):
            if i and body_delay:
                time.sleep(body_delay)
            if not p:
                continue
            if action == "close_mid_body":
                c.sendall(p[:max(1, len(p) // 2)])
                c.close()
                raise _Abort()
            if chunked:
                c.sendall(b"%x\r\n" % len(p) + bytes(p) + b"\r\n")
            else:
                c.sendall(p)
            sent += len(p)
        if chunked:
            c.sendall(b"0\r\n\r\n")
        return True


_REASONS = {100: "Continue", 200: "OK", 201: "Created", 204: "No Content",
            206: "Partial Content", 301: "Moved Permanently", 302: "Found",
            304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def gated_body(first, gate, rest, timeout=60.0):
    """A body iterator: yields `first`, waits for `gate`, then yields `rest`."""
    yield first
    if not gate.wait(timeout):
        return
    yield rest
