"""t03: the suite's HTTP/3 clients, checked against Debian's own HTTP/3 server before any test
trusts them against outpostd: h3curl (harness.curl(..., http="tls3")), gtlsclient_get() and
chromium_h3_nexthop(). The server is gtlsserver (ngtcp2's example server, package
ngtcp2-server) on a free loopback port with the suite's certificate; its debug output prints
every request head it receives, so these tests see exactly what each client put on the wire.
Also here: Outpost's HTTP/3 listener arguments and URL mapping, which need no running node.

Each test skips only when a tool it needs is missing."""

import os
import re
import shutil
import subprocess
import time

import pytest

import harness
from harness import HOST, curl, pattern_bytes, wait_for

GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
PAGE_BODY = b"hello h3\n"


def _udp_bound(port):
    """Whether some socket is bound to UDP 127.0.0.1:port, from /proc/net/udp (binding a probe
    socket could take the port from under the server)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in list(f)[1:])


class H3Server:
    """gtlsserver serving self.root on 127.0.0.1:self.port (UDP), logging request heads."""

    def __init__(self, tmp_path, trailers=False):
        if not os.access(GTLSSERVER, os.X_OK):
            pytest.skip("gtlsserver is not installed (ngtcp2-server; scripts/deps.sh test)")
        self.root = tmp_path / "www"
        self.root.mkdir()
        self.port = harness.free_port()
        self.log_path = tmp_path / "gtlsserver.log"
        cert, key = harness.test_certs()
        args = [GTLSSERVER, "--no-quic-dump", "-d", str(self.root)]
        if trailers:
            args.append("--send-trailers")
        args += [HOST, str(self.port), key, cert]  # the key first
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for(lambda: _udp_bound(self.port) or self.proc.poll() is not None, 10,
                 msg="gtlsserver to bind UDP %d" % self.port)
        assert self.proc.poll() is None, "gtlsserver exited: " + self.log_path.read_text()

    def url(self, path="/"):
        return "https://%s:%d%s" % (HOST, self.port, path)

    def put(self, name, data):
        (self.root / name).write_bytes(data)

    def requests(self):
        """The request heads received so far, in order: dicts with "sid" (stream id),
        "headers" ([(name, value)], pseudo-headers included) and "body" (bytes received)."""
        out, live = [], {}
        for line in self.log_path.read_bytes().decode("latin-1").splitlines():
            m = re.match(r"^http: stream 0x([0-9a-f]+) (.*)$", line)
            if not m:
                continue
            sid, what = int(m.group(1), 16), m.group(2)
            if what == "request headers started":
                live[sid] = {"sid": sid, "headers": [], "body": 0}
                out.append(live[sid])
            elif sid in live and re.match(r"^\[(:?[^:]*): (.*)\]$", what):
                f = re.match(r"^\[(:?[^:]*): (.*)\]$", what)
                live[sid]["headers"].append((f.group(1), f.group(2)))
            elif sid in live and re.match(r"^body (\d+) bytes$", what):
                live[sid]["body"] += int(what.split()[1])
        return out

    def wait_requests(self, n):
        return wait_for(lambda: len(self.requests()) >= n and self.requests(), 10,
                        msg="gtlsserver to log %d requests" % n)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def h3server(tmp_path):
    s = H3Server(tmp_path)
    s.put("index.html", PAGE_BODY)
    yield s
    s.stop()


@pytest.fixture
def h3server_trailers(tmp_path):
    s = H3Server(tmp_path, trailers=True)
    s.put("index.html", PAGE_BODY)
    yield s
    s.stop()


def h3curl_run(*args, timeout=30):
    return subprocess.run([harness._h3curl()] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def regular(req):
    return sorted((k, v) for k, v in req["headers"] if not k.startswith(":"))


def pseudo(req):
    return dict((k, v) for k, v in req["headers"] if k.startswith(":"))


# ---- h3curl ----------------------------------------------------------------------------------

def test_h3curl_status_headers_body_head(h3server, monkeypatch):
    big = pattern_bytes("h3-big", 300 * 1024 + 7)
    h3server.put("big.bin", big)
    r = curl(h3server.url("/index.html"), http="tls3")
    assert r.status == 200 and r.body == PAGE_BODY
    assert r.h("content-type") == "text/html" and r.h("content-length") == "9"
    assert r.h("server", "").startswith("nghttp3/ngtcp2")
    r = curl(h3server.url("/big.bin"), http="tls3")
    assert r.status == 200 and r.body == big and r.h("content-length") == str(len(big))
    r = curl(h3server.url("/nope"), http="tls3")  # any HTTP response is a success
    assert r.status == 404 and r.body
    r = curl(h3server.url("/index.html"), method="HEAD", http="tls3")
    assert r.status == 200 and r.body == b"" and r.h("content-length") == "9"
    assert [pseudo(q)[":method"] for q in h3server.wait_requests(4)] == ["GET"] * 3 + ["HEAD"]

    # A node's plaintext URL goes to its HTTP/3 port, as for an Outpost node.
    plain = harness.free_port()
    monkeypatch.setitem(harness._H3_PORTS, plain, h3server.port)
    url = "http://%s:%d/index.html" % (HOST, plain)
    assert harness.client_url(url, "tls3") == h3server.url("/index.html")
    out = h3server.root.parent / "out"
    r = curl(url, http="tls3", output=str(out))
    assert r.status == 200 and r.body is None and out.read_bytes() == PAGE_BODY


def test_h3curl_sends_exactly_the_request(h3server):
    curl(h3server.url("/index.html"), http="tls3",
         headers={"X-Outpost-Test": "1", "Host": "example.test", "X-Empty": "",
                  "X-Two": "a", "X-Removed": None})
    curl(h3server.url("/a/../b?x=%7e&y"), http="tls3", method="POST", data=b"x" * 1000)
    curl(h3server.url("/index.html"), http="tls3", method="PURGE",
         headers=[("X-Two", "a"), ("X-Two", "b"), ("User-Agent", "tester")])
    reqs = h3server.wait_requests(3)
    assert pseudo(reqs[0]) == {":method": "GET", ":path": "/index.html", ":scheme": "https",
                               ":authority": "example.test"}
    # Nothing of its own: no user-agent, accept or accept-encoding (quic-go's gzip is off).
    assert regular(reqs[0]) == [("x-empty", ""), ("x-outpost-test", "1"), ("x-two", "a")]
    # The path as typed; the body and its content-length.
    assert pseudo(reqs[1]) == {":method": "POST", ":path": "/a/../b?x=%7e&y",
                               ":scheme": "https", ":authority": "%s:%d" % (HOST, h3server.port)}
    assert regular(reqs[1]) == [("content-length", "1000")] and reqs[1]["body"] == 1000
    assert pseudo(reqs[2])[":method"] == "PURGE"
    assert regular(reqs[2]) == [("user-agent", "tester"), ("x-two", "a"), ("x-two", "b")]


def test_h3curl_repeats_on_one_connection(h3server, tmp_path):
    h3server.put("two.txt", b"second\n")
    head, body = tmp_path / "head", tmp_path / "body"
    p = h3curl_run("-k", "-n", "3", "-D", str(head), "-o", str(body), "--max-time", "20",
                   h3server.url("/two.txt"))
    assert p.returncode == 0, p.stderr
    assert body.read_bytes() == b"second\n"
    assert head.read_bytes().startswith(b"HTTP/3 200\r\n") and head.read_bytes().endswith(
        b"\r\n\r\n")
    # One connection: its streams 0, 4, 8 (a new connection would start at 0 again).
    assert [q["sid"] for q in h3server.wait_requests(3)] == [0, 4, 8]


def test_h3curl_transport_errors_exit_non_zero(h3server, tmp_path):
    # No listener: QUIC has no "refused", so it is a timeout (curl's 28).
    t0 = time.monotonic()
    p = h3curl_run("-k", "--max-time", "2", "https://%s:%d/" % (HOST, harness.free_port()))
    assert p.returncode == 28 and p.stderr.startswith(b"h3curl: "), p
    assert time.monotonic() - t0 < 10
    # Without -k the self-signed certificate fails the handshake (curl's 35)...
    p = h3curl_run("--max-time", "10", h3server.url("/index.html"))
    assert p.returncode == 35 and b"certificate" in p.stderr, p
    # ... and passes with it as the CA.
    p = h3curl_run("--cacert", harness.test_certs()[0], "--max-time", "10",
                   h3server.url("/index.html"))
    assert p.returncode == 0 and p.stdout == PAGE_BODY, p
    p = h3curl_run("--bogus", h3server.url("/"))
    assert p.returncode == 2 and b"unknown option" in p.stderr
    p = h3curl_run("-k", "http://%s:%d/" % (HOST, h3server.port))
    assert p.returncode == 2 and b"https" in p.stderr
    with pytest.raises(harness.CurlError, match="h3curl"):
        curl("https://%s:%d/" % (HOST, harness.free_port()), http="tls3", timeout=1)


def test_h3curl_reads_past_trailers(h3server_trailers):
    r = curl(h3server_trailers.url("/index.html"), http="tls3")
    assert r.status == 200 and r.body == PAGE_BODY


# ---- gtlsclient ------------------------------------------------------------------------------

def test_gtlsclient_get_statuses_headers_bodies(h3server):
    big = pattern_bytes("gtls-big", 200 * 1024 + 3)
    zeros = b"\0" * 5000 + b"end"  # hexdump -C prints "*" for the repeated rows
    h3server.put("big.bin", big)
    h3server.put("zeros.bin", zeros)
    urls = [h3server.url(p) for p in ("/index.html", "/big.bin", "/zeros.bin", "/nope")]
    rs = harness.gtlsclient_get(urls, n=5)
    assert [r.status for r in rs] == [200, 200, 200, 404, 200]
    assert [r.body for r in rs[:3]] == [PAGE_BODY, big, zeros] and rs[4].body == PAGE_BODY
    assert rs[1].h("content-length") == str(len(big)) and rs[0].h("content-type") == "text/html"
    assert all(r.stream_error == 256 for r in rs)  # H3_NO_ERROR
    reqs = h3server.wait_requests(5)
    assert [q["sid"] for q in reqs] == [0, 4, 8, 12, 16]  # one connection
    assert dict(regular(reqs[0])) == {"user-agent": "nghttp3/ngtcp2 client"}

    # The same bodies read from --download instead of the hexdump.
    rs = harness.gtlsclient_get(urls[:3], download_bodies=True)
    assert [r.body for r in rs] == [PAGE_BODY, big, zeros]

    r, = harness.gtlsclient_get(h3server.url("/index.html"), method="HEAD")
    assert r.status == 200 and r.body == b"" and r.h("content-length") == "9"
    r, = harness.gtlsclient_get(h3server.url("/index.html"), method="POST", data=b"y" * 10)
    assert r.status == 200
    q = h3server.wait_requests(8)[-1]
    assert pseudo(q)[":method"] == "POST" and q["body"] == 10


def test_gtlsclient_trailers_and_no_server(h3server_trailers):
    r, = harness.gtlsclient_get(h3server_trailers.url("/index.html"))
    assert r.status == 200 and r.body == PAGE_BODY
    assert r.trailers == {"x-ngtcp2-stream-id": ["0"]}
    # gtlsclient exits 0 after a handshake timeout: the harness must notice.
    with pytest.raises(harness.GtlsclientError, match="no response"):
        harness.gtlsclient_get("https://%s:%d/" % (HOST, harness.free_port()), timeout=2)


def test_parse_gtlsclient_log():
    log = "\n".join([
        "I00000001 0x1234 frm rx 1 1RTT STREAM(0x0a) id=0x0",
        "http: stream 0x0 submit request headers",
        "[:method: GET]",
        "http: stream 0x0 response headers started",
        "http: stream 0x0 [:status: 103]",
        "http: stream 0x0 [link: </a.css>]",
        "http: stream 0x0 headers ended",
        "http: stream 0x0 response headers started",
        "http: stream 0x0 [:status: 200]",
        "http: stream 0x0 [X-Empty: ]",
        "http: stream 0x0 [set-cookie: a=1]",
        "http: stream 0x0 [set-cookie: b=2]",
        "http: stream 0x0 headers ended",
        "http: stream 0x0 body 40 bytes",
        "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|",
        "*",
        "00000020  41 42 43 44 45 46 47 48                           |ABCDEFGH|",
        "00000028",
        "Timer expired",
        "http: stream 0x0 body 0 bytes",
        "http: stream 0x4 response headers started",
        "http: stream 0x4 [:status: 204]",
        "http: stream 0x4 headers ended",
        "http: stream 0x0 body 3 bytes",
        "00000000  7c 20 7c                                          ||.||",
        "00000003",
        "http: stream 0x0 trailers started",
        "http: stream 0x0 [x-t: 1]",
        "http: stream 0x0 trailers ended",
        "HTTP stream 0 closed with error code 256",
        "HTTP stream 4 closed with error code 268",
    ])
    rs = harness.parse_gtlsclient_log(log)
    assert sorted(rs) == [0, 4]
    r = rs[0]
    assert r.status == 200 and "link" not in r.headers
    assert r.headers == {"x-empty": [""], "set-cookie": ["a=1", "b=2"]}
    assert r.body == b"\0" * 32 + b"ABCDEFGH" + b"| |"
    assert r.trailers == {"x-t": ["1"]} and r.stream_error == 256
    assert rs[4].status == 204 and rs[4].body == b"" and rs[4].stream_error == 268
    with pytest.raises(ValueError, match="decoded"):
        harness.parse_gtlsclient_log("http: stream 0x0 body 5 bytes\n"
                                     "00000000  41 42                 |AB|\n00000005")


def test_gtls_download_names():
    assert harness._gtls_file_name("https://h:1/a/b.txt?x=1") == "b.txt?x=1"
    assert harness._gtls_file_name("https://h:1/") == "index.html"
    assert harness._gtls_file_name("https://h:1") == "index.html"
    assert harness._gtls_file_name("https://h:1/dir/") == "index.html"


# ---- Chromium --------------------------------------------------------------------------------

# A 1x1 GIF (GIF89a header, logical screen, a two-entry colour table, one image, trailer).
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff2c00000000010001000002024401"
                          "003b")
PAGE = b"""<!DOCTYPE html>
<html><head><title>h3</title><script src="/asset.js"></script></head>
<body>
<p id="nav">nav=?</p><p id="script">script=?</p><p id="img">img=?</p>
<script>
function hop(path) {
    var e = performance.getEntriesByType('resource').filter(function (x) {
        return x.name.indexOf(path) >= 0; })[0];
    return e ? e.nextHopProtocol : 'none';
}
var n = performance.getEntriesByType('navigation')[0];
document.getElementById('nav').textContent = 'nav=' + (n ? n.nextHopProtocol : 'none');
document.getElementById('script').textContent =
    'script=' + (window.assetRan ? hop('/asset.js') : 'not-run');
</script>
<img src="/pixel.gif"
     onload="document.getElementById('img').textContent = 'img=' + hop('/pixel.gif')">
</body></html>
"""


def test_chromium_loads_page_and_assets_over_h3(h3server):
    h3server.put("page.html", PAGE)
    h3server.put("asset.js", b"window.assetRan = true;\n")
    h3server.put("pixel.gif", PIXEL_GIF)
    t0 = time.monotonic()
    dom = harness.chromium_h3_nexthop(h3server.url("/page.html"), harness.test_certs()[0])
    took = time.monotonic() - t0
    seen = dict(re.findall(r'<p id="(\w+)">\w+=([^<]*)</p>', dom))
    assert seen == {"nav": "h3", "script": "h3", "img": "h3"}, dom
    paths = {pseudo(q)[":path"]: dict(regular(q)).get("user-agent", "")
             for q in h3server.wait_requests(3)}
    assert set(paths) >= {"/page.html", "/asset.js", "/pixel.gif"}
    assert "Chrome" in paths["/page.html"]
    assert took < 30, "chromium took %.1fs" % took


def test_chromium_wrong_pin_fails_fast(h3server, tmp_path):
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(other), "-days", "1", "-subj", "/CN=other"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    with pytest.raises(harness.ChromiumError, match="ERR_QUIC_PROTOCOL_ERROR|no DOM"):
        harness.chromium_h3_nexthop(h3server.url("/index.html"), str(other), timeout=15)
    assert time.monotonic() - t0 < 40


# ---- Outpost's HTTP/3 listener ---------------------------------------------------------------

def test_outpost_h3_listener_arguments(tmp_path):
    node = harness.Outpost(tmp_path / "a", h3=True)  # built, not started
    cert, key = harness.test_certs()
    i = node.args.index("--h3-listen")
    assert node.args[i + 1] == "%s:%d" % (HOST, node.tls_port) and node.h3_port == node.tls_port
    assert node.args[node.args.index("--cert") + 1] == cert
    assert harness.client_url(node.url("/x?y"), "tls3") == "https://%s:%d/x?y" % (
        HOST, node.tls_port)
    assert harness.client_url(node.url("/x"), "tls2") == "https://%s:%d/x" % (HOST, node.tls_port)

    plain = harness.Outpost(tmp_path / "b", tls=False)
    assert "--h3-listen" not in plain.args and plain.h3_port is None
    with pytest.raises(AssertionError, match="no HTTP/3 listener"):
        harness.client_url(plain.url("/"), "tls3")
    with pytest.raises(ValueError):
        harness.Outpost(tmp_path / "c", tls=False, h3=True)

    # The default: HTTP/3 whenever TLS is on
    default = harness.Outpost(tmp_path / "d")
    assert "--h3-listen" in default.args and default.h3_port == default.tls_port


def test_tls3_is_a_default_protocol():
    assert harness.PROTOCOL_IDS["tls3"] == "https3"
    if "OUTPOST_E2E_PROTOCOLS" not in os.environ:
        assert "tls3" in harness.PROTOCOLS
