"""t02: the project's own tooling, as the README promises it: scripts/deps.sh is quiet when every
package is present, `make lint` passes on the tree and catches what it should, the sample origin
speaks HTTP/1.1 with validators, and scripts/run-local.sh (`make run`) starts an origin, a
shield and two edges on the ports it is given, answers through both edges (a miss goes through
the shield to the origin), and on SIGINT leaves no process behind.

Self-contained (no harness.py): these tests check the scripts, not the edge."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
PY = "/usr/bin/python3"


def outpostd_path():
    return REPO / os.environ.get("OUTPOST_BUILD", "build") / "outpostd"


def free_ports(n):
    """n distinct free loopback ports (bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def session_members(sid):
    """pids of the live (non-zombie) processes whose session id is sid."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(d))
    return pids


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


# ---- scripts/deps.sh -------------------------------------------------------------------------

def test_deps_sets_nest_and_link_no_openssl():
    sets = {}
    for name in ("build", "test", "run", "bench"):
        r = run(["scripts/deps.sh", "--list", name])
        assert r.returncode == 0, r.stderr
        sets[name] = set(r.stdout.split())
    assert sets["build"] <= sets["run"] and sets["build"] <= sets["test"] <= sets["bench"]
    assert {"python3", "curl"} <= sets["run"]
    assert {"python3-pytest", "curl", "clang", "libclang-rt-14-dev"} <= sets["test"]
    # shared/STACK.md: nothing we link may bring OpenSSL 3 in.
    for p in sets["bench"]:
        assert not re.match(r"^(libssl-dev|libcurl.*-dev|libevent-openssl.*)$", p), p
    r = run(["scripts/deps.sh", "nonsense"])
    assert r.returncode == 2 and "usage" in r.stderr


def test_deps_test_all_present_is_quiet():
    # `make test` ran scripts/deps.sh test before this suite, so everything is installed. The
    # dry run first: if something is missing, say what rather than install from a test.
    r = run(["scripts/deps.sh", "test"], env=dict(os.environ, DEPS_DRY_RUN="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "deps: all present\n", "missing packages: " + r.stdout
    r = run(["scripts/deps.sh", "test"])
    assert r.returncode == 0
    assert r.stdout == "deps: all present\n" and r.stderr == ""


# ---- scripts/lint.sh -------------------------------------------------------------------------

def test_make_lint_passes_on_the_tree():
    r = run(["make", "--no-print-directory", "lint"])
    assert r.returncode == 0, "make lint failed:\n" + r.stdout + r.stderr


BAD_FILES = {
    "lib/util.c": "void *xmalloc(size_t n) { return malloc(n); }\n",
    "cache/cache_int.h": "int cache_private;\n",
    "cache/store.c": (
        '#include "cache/cache_int.h"\n'
        "/* malloc() and sprintf( in a comment are fine */\n"
        'const char *s = "strcpy(a, b)";\n'
        "int f(char *b) { sprintf(b, \"%d\", 1); return atoi(b) + snprintf(b, 2, \"x\"); }\n"
        "void *g(void) { return xmalloc(3) ? arena_strdup(a, s) : calloc (1, 2); }\n"
        "void h(struct al *a) { a->malloc(3); strtok_r(0, 0, 0); strtok(0, \",\"); }\n"
    ),
    "edge/edge_int.h": "\n",
    "edge/h1/conn.c": (
        '#include "cache/cache_int.h"\n'
        '#include "edge/edge_int.h"\n'
        "char *d = strdup(\"x\");\n"
    ),
    "tests/unit/t.c": "void *p = malloc(3); int y = atoi(\"1\");\n",
    "edge/big.c": "int a;\n" * 2501,
    "edge/ok.c": "int a;\n" * 2500,
}


def test_lint_finds_each_kind_of_problem(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for name, text in BAD_FILES.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "untracked.c").write_text("int x(void) { return atoi(\"1\"); }\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add"] + list(BAD_FILES), cwd=tmp_path, check=True)
    r = subprocess.run([str(SCRIPTS / "lint.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    found = [l.split(": ", 1)[0] + ": " + l.split(": ", 1)[1].split()[0]
             for l in r.stdout.splitlines()]
    assert found == [
        "cache/store.c:4: banned",   # sprintf
        "cache/store.c:4: banned",   # atoi
        "cache/store.c:5: direct",   # calloc
        "cache/store.c:6: banned",   # strtok
        "edge/big.c:2501: 2501",     # too long
        "edge/h1/conn.c:1: includes",  # another module's _int.h
        "edge/h1/conn.c:3: direct",  # strdup
    ], r.stdout


# ---- scripts/sample-origin.py ----------------------------------------------------------------

@pytest.fixture
def sample_origin(tmp_path):
    port = free_ports(1)[0]
    p = subprocess.Popen([PY, str(SCRIPTS / "sample-origin.py"), "--port", str(port),
                          "--dir", str(tmp_path / "files"), "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: port_open(port) or p.poll() is not None, 10, "sample-origin")
        assert p.poll() is None, p.stderr.read()
        yield port
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0


def test_sample_origin_keepalive_validators_head(sample_origin):
    c = http.client.HTTPConnection("127.0.0.1", sample_origin, timeout=10)
    sizes = {"/": None, "/1k.txt": 1024, "/128k.bin": 128 * 1024, "/1m.bin": 1024 * 1024}
    for path, size in sizes.items():
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and r.version == 11
        assert size is None or len(body) == size
        assert r.getheader("Cache-Control") == "public, max-age=60"
        assert r.getheader("ETag") and r.getheader("Last-Modified")
        if path == "/1k.txt":
            etag_1k = r.getheader("ETag")
    sock = c.sock
    # If-None-Match: a list, and the weak comparison (RFC 9110 13.1.2).
    c.request("GET", "/1k.txt", headers={"If-None-Match": '"nope", W/' + etag_1k})
    r = c.getresponse()
    assert r.status == 304 and r.read() == b""
    c.request("GET", "/1k.txt", headers={"If-None-Match": "*"})
    r = c.getresponse()
    assert r.status == 304 and r.read() == b""
    c.request("HEAD", "/1m.bin")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == str(1024 * 1024)
    assert r.read() == b""
    assert c.sock is sock, "the connection was not kept alive"

    c.request("GET", "/128k.bin")
    r = c.getresponse()
    etag, lm = r.getheader("ETag"), r.getheader("Last-Modified")
    r.read()
    c.request("GET", "/128k.bin", headers={"If-None-Match": etag})
    r = c.getresponse()
    assert r.status == 304 and r.getheader("ETag") == etag and r.read() == b""
    c.request("GET", "/128k.bin", headers={"If-Modified-Since": lm})
    r = c.getresponse()
    assert r.status == 304 and r.read() == b""

    c.request("GET", "/api/time")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Cache-Control") == "no-store" and r.read()

    c.request("GET", "/vary", headers={"Accept-Encoding": "gzip"})
    r = c.getresponse()
    gz = r.read()
    assert r.getheader("Vary") == "Accept-Encoding" and r.getheader("Content-Encoding") == "gzip"
    c.request("GET", "/vary", headers={"Accept-Encoding": "identity"})
    r = c.getresponse()
    plain = r.read()
    assert r.getheader("Vary") == "Accept-Encoding" and r.getheader("Content-Encoding") is None
    assert len(gz) < len(plain)

    c.request("POST", "/form", body=b"x" * 100)
    r = c.getresponse()
    assert r.status == 200 and b'"received": 100' in r.read()
    c.request("GET", "/nope")
    r = c.getresponse()
    assert r.status == 404 and r.read()
    assert c.sock is sock
    c.close()


# ---- scripts/run-local.sh --------------------------------------------------------------------

STUB_OUTPOSTD = r'''#!/usr/bin/python3
# A stand-in for build/outpostd with the README's quick-start flags and an in-memory cache;
# with --shield, misses go to the first shield instead of the origin.
import argparse, signal, sys, threading, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ap = argparse.ArgumentParser()
for f in ("--listen", "--origin", "--cache-dir", "--admin", "--workers", "--tls-listen",
          "--h3-listen", "--cert", "--key", "--role"):
    ap.add_argument(f)
ap.add_argument("--shield", action="append")
ap.add_argument("--set", action="append")
a = ap.parse_args()
upstream = a.shield[0] if a.shield else a.origin
cache = {}
class Edge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *x):
        pass
    def reply(self, body, xcache=None):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if xcache:
            self.send_header("X-Cache", xcache)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        hit = self.path in cache
        if not hit:
            with urllib.request.urlopen(upstream + self.path) as r:
                cache[self.path] = r.read()
        self.reply(cache[self.path], "HIT" if hit else "MISS")
class Admin(Edge):
    def do_GET(self):
        self.reply(b'{"node": "stub"}\n')
def serve(addr, handler):
    host, port = addr.rsplit(":", 1)
    s = ThreadingHTTPServer((host, int(port)), handler)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
serve(a.listen, Edge)
serve(a.admin, Admin)
signal.signal(signal.SIGTERM, lambda *x: sys.exit(0))
signal.signal(signal.SIGINT, lambda *x: sys.exit(0))
while True:
    signal.pause()
'''


def curl_x_cache(port, path, host=None):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "--max-time", "10"]
                       + (["-H", "Host: " + host] if host else [])
                       + ["http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, "curl exit %d" % r.returncode
    status = r.stdout.splitlines()[0] if r.stdout else ""
    m = re.search(r"^x-cache:\s*(\S+)", r.stdout, re.I | re.M)
    return status, (m.group(1) if m else None)


def admin_json(port, path="/status"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


def upstream_requests(status, name):
    """Requests recorded for the servers of upstream group `name` in a node's /status."""
    for u in status["upstreams"]:
        if u["name"] == name:
            return sum(s["requests"] for s in u["servers"])
    raise AssertionError("no upstream %r in %s" % (name, [u["name"] for u in status["upstreams"]]))


def check_run_local(tmp_path, outpostd, tls=True):
    """tls: the real outpostd (HTTPS, HTTP/3, /status of every node) rather than the stub."""
    (edge, origin, admin, tls_port, edge2, edge2_admin, shield,
     shield_admin) = ports = free_ports(8)
    assert not {8080, 8081, 8082, 8083, 8090, 8091, 8443, 9000} & set(ports)
    env = dict(os.environ, OUTPOSTD=str(outpostd), OUTPOST_PORT=str(edge),
               ORIGIN_PORT=str(origin), ADMIN_PORT=str(admin), TLS_PORT=str(tls_port),
               EDGE2_PORT=str(edge2), EDGE2_ADMIN_PORT=str(edge2_admin),
               SHIELD_PORT=str(shield), SHIELD_ADMIN_PORT=str(shield_admin),
               OUTPOST_RUN_DIR=str(tmp_path / "run"), RUN_LOCAL_TIMEOUT="20")
    log = tmp_path / "run-local.log"
    with open(log, "wb") as out:
        # Its own session, so that every process it started can be found afterwards; SIGINT
        # reset to the default in case this pytest was started with it ignored.
        p = subprocess.Popen([str(SCRIPTS / "run-local.sh")], cwd=REPO, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sid = p.pid
    try:
        wait_for(lambda: b"Try:" in log.read_bytes() or p.poll() is not None, 30,
                 "run-local.sh to print what to try")
        text = log.read_text(errors="replace")
        assert p.poll() is None, "run-local.sh exited %s:\n%s" % (p.returncode, text)
        assert "curl -i http://127.0.0.1:%d/" % edge in text
        assert "http://127.0.0.1:%d/" % edge2 in text
        assert "http://127.0.0.1:%d/metrics" % admin in text
        started = session_members(sid)
        assert len(started) >= 5, started  # the script, the origin, the shield, two edges

        status, xc = curl_x_cache(edge, "/1k.txt")
        assert status.endswith(" 200 OK") and xc == "MISS", (status, xc)
        # The object is written to the cache behind the response: wait for the event (a HIT),
        # bounded, rather than sleep.
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, xc = curl_x_cache(edge, "/1k.txt")
            seen.append(xc)
            if xc == "HIT":
                break
            time.sleep(0.1)
        assert status.endswith(" 200 OK") and seen[-1] == "HIT", seen
        if tls:
            # the miss went edge1 -> shield -> origin: the shield asked its origin once, edge1
            # never asked its fallback origin
            assert upstream_requests(admin_json(admin), "--shield") == 1
            assert upstream_requests(admin_json(admin), "site *") == 0
            assert admin_json(shield_admin)["role"] == "shield"
            assert upstream_requests(admin_json(shield_admin), "site *") == 1
        # the second edge has its own cache, and the same shield: with edge1's Host, the
        # cache key (authority + path) is the one the shield has
        status, xc = curl_x_cache(edge2, "/1k.txt", host="127.0.0.1:%d" % edge)
        assert status.endswith(" 200 OK") and xc == "MISS", (status, xc)
        if tls:
            assert upstream_requests(admin_json(edge2_admin), "--shield") == 1
            # the shield had it: the origin was not asked again
            assert upstream_requests(admin_json(shield_admin), "site *") == 1
            st = admin_json(edge2_admin)
            assert st["role"] == "edge"
            # what the edges' health checks ask the shield
            r = subprocess.run(["curl", "-s", "-w", " %{http_code}", "--max-time", "10",
                                "http://127.0.0.1:%d/_outpost/health" % shield],
                               capture_output=True, text=True, timeout=20)
            assert r.stdout.endswith(" 200") and "ok" in r.stdout, r.stdout
        # the same object over HTTPS (HTTP/2) and HTTP/3, advertised by Alt-Svc (not the stub)
        r = tls and subprocess.run(["curl", "-ks", "--http2", "-o", "/dev/null", "-D", "-",
                            "--max-time", "10", "https://127.0.0.1:%d/1k.txt" % tls_port],
                           capture_output=True, text=True, timeout=20)
        if tls:
            assert r.stdout.startswith("HTTP/2 200"), r.stdout
            assert re.search(r'^alt-svc: h3=":%d"' % tls_port, r.stdout, re.I | re.M), r.stdout
            h3 = harness.curl("https://127.0.0.1:%d/1k.txt" % tls_port, http="tls3")
            assert h3.status == 200 and h3.xcache == "HIT", h3.headers

        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        if p.poll() is None:
            os.killpg(sid, signal.SIGKILL)
            p.wait()
    left = session_members(sid)
    for pid in left:  # clean up before failing, only what is in the script's own session
        os.kill(pid, signal.SIGKILL)
    assert left == [], "run-local.sh left processes behind: %s" % left
    for port in (edge, origin, admin, edge2, edge2_admin, shield, shield_admin):
        assert not port_open(port), "port %d still open" % port
    assert "run-local: stopped" in log.read_text(errors="replace")


def test_run_local_lifecycle_with_a_stub_edge(tmp_path):
    """The script's own mechanics, whether or not the daemon is built yet."""
    stub = tmp_path / "stub-outpostd"
    stub.write_text(STUB_OUTPOSTD)
    stub.chmod(0o755)
    check_run_local(tmp_path, stub, tls=False)


def test_run_local_with_outpostd(tmp_path):
    d = outpostd_path()
    if not os.access(d, os.X_OK):
        pytest.skip("%s is not built yet: run-local.sh needs the daemon" % d)
    check_run_local(tmp_path, d)


def test_run_local_refuses_a_busy_port(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    busy = s.getsockname()[1]
    stub = tmp_path / "stub-outpostd"
    stub.write_text(STUB_OUTPOSTD)
    stub.chmod(0o755)
    edge, admin, edge2, edge2_admin, shield, shield_admin = free_ports(6)
    env = dict(os.environ, OUTPOSTD=str(stub), OUTPOST_PORT=str(edge), ORIGIN_PORT=str(busy),
               ADMIN_PORT=str(admin), EDGE2_PORT=str(edge2), EDGE2_ADMIN_PORT=str(edge2_admin),
               SHIELD_PORT=str(shield), SHIELD_ADMIN_PORT=str(shield_admin),
               OUTPOST_RUN_DIR=str(tmp_path / "run"))
    r = run([str(SCRIPTS / "run-local.sh")], env=env, timeout=30)
    s.close()
    assert r.returncode == 1 and "already in use" in r.stderr, r.stdout + r.stderr
