#!/usr/bin/python3
"""A small real HTTP/1.1 origin for `make run` and tests (stdlib only).

    /usr/bin/python3 scripts/sample-origin.py [--host 127.0.0.1] [--port 9000] [--dir DIR] [--quiet]

It writes its sample files into DIR (default .run/origin) and serves them with keep-alive:

    /  /index.html   an HTML page listing the others
    /1k.txt          1 KiB of text
    /128k.bin        128 KiB of binary data
    /1m.bin          1 MiB of binary data
    /api/time        the current time, Cache-Control: no-store (never cacheable)
    /vary            Vary: Accept-Encoding; gzip-encoded when the request accepts gzip

Files are cacheable (Cache-Control: public, max-age=60) with a strong ETag and Last-Modified;
If-None-Match and If-Modified-Since are answered with 304, HEAD with the headers only. The
content is deterministic, and files are only rewritten when their content differs, so ETag and
Last-Modified survive a restart. POST/PUT/DELETE/PATCH read and discard the body (Content-Length
or chunked) and answer 200 with no-store. Only the fixed set of paths above is served: nothing
else under DIR is reachable.
"""

import argparse
import email.utils
import gzip
import hashlib
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CACHEABLE = "public, max-age=60"


def _pseudo_random(n, seed):
    """n deterministic bytes (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s:%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def _text_1k():
    line = b"Outpost sample origin: 1 KiB of plain text for cache tests.\n"  # 60 bytes
    body = (line * 18)[:1023] + b"\n"
    assert len(body) == 1024
    return body


INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Outpost sample origin</title></head>
<body>
<h1>Outpost sample origin</h1>
<ul>
<li><a href="/1k.txt">/1k.txt</a> 1 KiB text</li>
<li><a href="/128k.bin">/128k.bin</a> 128 KiB binary</li>
<li><a href="/1m.bin">/1m.bin</a> 1 MiB binary</li>
<li><a href="/api/time">/api/time</a> uncacheable (no-store)</li>
<li><a href="/vary">/vary</a> Vary: Accept-Encoding</li>
</ul>
</body></html>
"""

VARY_BODY = b"This response varies on Accept-Encoding. " * 64 + b"\n"

# name -> (content type, content)
SAMPLES = {
    "index.html": ("text/html; charset=utf-8", INDEX),
    "1k.txt": ("text/plain; charset=utf-8", _text_1k()),
    "128k.bin": ("application/octet-stream", _pseudo_random(128 * 1024, b"128k")),
    "1m.bin": ("application/octet-stream", _pseudo_random(1024 * 1024, b"1m")),
    "vary.txt": ("text/plain; charset=utf-8", VARY_BODY),
}


class Obj:
    """One servable representation, loaded in memory."""

    def __init__(self, ctype, body, mtime, etag, encoding=None):
        self.ctype = ctype
        self.body = body
        self.mtime = mtime
        self.etag = etag
        self.encoding = encoding


def _etag(body, suffix=""):
    return '"%s%s"' % (hashlib.sha256(body).hexdigest()[:20], suffix)


def prepare(directory):
    """Write the sample files into directory (only where missing or different); load them."""
    os.makedirs(directory, exist_ok=True)
    objs = {}
    for name, (ctype, body) in SAMPLES.items():
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                same = f.read() == body
        except OSError:
            same = False
        if not same:
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, path)
        mtime = int(os.stat(path).st_mtime)
        objs[name] = Obj(ctype, body, mtime, _etag(body))
    v = objs["vary.txt"]
    # mtime=0 keeps gzip's output identical across runs, so the ETag is stable too.
    gz = gzip.compress(v.body, mtime=0)
    objs["vary.txt.gz"] = Obj(v.ctype, gz, v.mtime, _etag(gz, "-gzip"), "gzip")
    return objs


ROUTES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/1k.txt": "1k.txt",
    "/128k.bin": "128k.bin",
    "/1m.bin": "1m.bin",
}


def _accepts_gzip(value):
    for part in (value or "").split(","):
        fields = [x.strip() for x in part.split(";")]
        if fields[0].lower() not in ("gzip", "x-gzip"):
            continue
        q = 1.0
        for p in fields[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def _etag_matches(header, etag):
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2)."""
    if header.strip() == "*":
        return True
    strip = lambda t: t.strip()[2:] if t.strip().startswith("W/") else t.strip()
    return any(strip(t) == strip(etag) for t in header.split(","))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    server_version = "outpost-sample-origin/1"
    timeout = 60  # an idle keep-alive connection is closed after this long
    objs = {}
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("origin: %s %s\n" % (self.address_string(), fmt % args))

    # ---- request bodies -------------------------------------------------------------------
    def _drain_body(self):
        """Read the request body; returns its length, or None after answering 400."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                self._simple(501, b"unsupported transfer coding\n", close=True)
                return None
            n = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self._simple(400, b"bad chunk\n", close=True)
                    return None
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return n
                self.rfile.read(size)
                self.rfile.readline(8)
                n += size
        cl = self.headers.get("Content-Length")
        if cl is None:
            return 0
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self._simple(400, b"bad content-length\n", close=True)
            return None
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)
        return int(cl)

    # ---- responses ------------------------------------------------------------------------
    def _simple(self, code, body, cache="no-store", ctype="text/plain; charset=utf-8",
                close=False, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for k, v in extra:
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, obj, vary=False):
        headers = [
            ("ETag", obj.etag),
            ("Last-Modified", email.utils.formatdate(obj.mtime, usegmt=True)),
            ("Cache-Control", CACHEABLE),
        ]
        if vary:
            headers.append(("Vary", "Accept-Encoding"))
        if obj.encoding:
            headers.append(("Content-Encoding", obj.encoding))
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:
            not_modified = _etag_matches(inm, obj.etag)
        elif ims is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
                not_modified = obj.mtime <= since
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
        if not_modified:
            self.send_response(304)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", obj.ctype)
        self.send_header("Content-Length", str(len(obj.body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(obj.body)

    def do_GET(self):
        if self._drain_body() is None:
            return
        path = self.path.split("?", 1)[0]
        if path.startswith("http://") or path.startswith("https://"):
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        if path in ROUTES:
            self._serve(self.objs[ROUTES[path]])
        elif path == "/api/time":
            now = time.time()
            body = ('{"time": %.3f, "date": "%s"}\n'
                    % (now, email.utils.formatdate(now, usegmt=True))).encode()
            self._simple(200, body, cache="no-store", ctype="application/json")
        elif path == "/vary":
            gz = _accepts_gzip(self.headers.get("Accept-Encoding"))
            self._serve(self.objs["vary.txt.gz" if gz else "vary.txt"], vary=True)
        else:
            self._simple(404, b"not found\n", cache="public, max-age=10")

    do_HEAD = do_GET

    def _unsafe(self):
        n = self._drain_body()
        if n is None:
            return
        body = ('{"method": "%s", "path": "%s", "received": %d}\n'
                % (self.command, self.path.replace('"', "%22"), n)).encode()
        self._simple(200, body, cache="no-store", ctype="application/json")

    do_POST = do_PUT = do_DELETE = do_PATCH = _unsafe


def main():
    ap = argparse.ArgumentParser(description="Outpost's sample HTTP/1.1 origin")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--dir", default=".run/origin", help="where the sample files are written")
    ap.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = ap.parse_args()

    Handler.objs = prepare(args.dir)
    Handler.quiet = args.quiet
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer((args.host, args.port), Handler)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write("origin: serving %s on http://%s:%d/\n"
                     % (os.path.abspath(args.dir), args.host, srv.server_address[1]))
    sys.stderr.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
