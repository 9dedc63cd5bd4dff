"""t40: the HTTP/2 front end (RFC 9113) over h2c with prior knowledge on the plaintext listener.

Behaviour with real clients: curl (cache miss then hit), nghttp (our SETTINGS and frames),
h2load (many streams on a few connections, all 2xx), the concurrent stream limit, a large
object on one stream while a small one completes on another stream of the same connection, a
request body through to the origin.

Attacks with python3-h2 (and hand-built frames where h2 would refuse to misbehave) on a raw
socket: rapid reset (CVE-2023-44487), CONTINUATION flood, HPACK bomb, PING and SETTINGS floods,
a zero flow-control window, and idleness; each must end that connection with GOAWAY while a
fresh client still gets its answer. Graceful shutdown: SIGTERM while a stream is active sends
GOAWAY and the stream completes. Every loop is bounded in count and time; only 127.0.0.1.
"""

import hashlib
import re
import socket
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest

from harness import HOST, client_url, curl, large_body_digest, large_body_iter, wait_for

CC = {"Cache-Control": "max-age=600"}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB


# --------------------------------------------------------------------------------------------
# A small HTTP/2 client on python3-h2


class H2Client:
    """One HTTP/2 connection driven by hand; events are collected per stream."""

    def __init__(self, node, settings=None, timeout=10.0):
        self.sock = socket.create_connection((HOST, node.port), timeout=timeout)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.headers = {}
        self.data = {}
        self.ended = set()
        self.resets = {}
        self.goaway = None
        self.closed = False
        self.order = []  # stream ids in the order their response ended
        self.auto_ack = True

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, node, path, method="GET", extra=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", node.addr),
                (":path", path)] + list(extra)
        self.conn.send_headers(sid, hdrs, end_stream=end)
        self.flush()
        return sid

    def _on_event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self.headers[ev.stream_id] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            if self.auto_ack and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended.add(ev.stream_id)
            self.order.append(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code

    def pump(self, until, timeout=10.0):
        """Read and handle frames until until() is true, the peer closes, or timeout."""
        deadline = time.monotonic() + timeout
        while not until() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(min(left, 1.0))
            try:
                d = self.sock.recv(262144)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self.closed = True
                break
            if not d:
                self.closed = True
                break
            try:
                for ev in self.conn.receive_data(d):
                    self._on_event(ev)
            except h2.exceptions.ProtocolError:
                pass
            try:
                self.flush()
            except OSError:
                self.closed = True
        return until()

    def status(self, sid):
        return int(self.headers[sid][":status"]) if sid in self.headers else None

    def close(self):
        self.sock.close()


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def read_until_closed(sock, timeout=10.0):
    """Read raw bytes until the peer closes or `timeout`; returns (data, closed)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(out), False
        sock.settimeout(min(left, 1.0))
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return bytes(out), True
        if not d:
            return bytes(out), True
        out += d


def frames_of(data):
    """Split raw server bytes into (type, flags, stream, payload)."""
    out = []
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, sid, data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out


def goaway_codes(data):
    return [struct.unpack(">II", p[:8])[1] for t, _, _, p in frames_of(data) if t == 7]


def raw_h2(node):
    """A raw socket past the preface and an empty SETTINGS."""
    s = socket.create_connection((HOST, node.port), timeout=10)
    s.sendall(PREFACE + frame(4, 0, 0))
    return s


def request_block(node, path="/", extra=()):
    enc = hpack.Encoder()
    return enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", node.addr),
                       (":path", path)] + list(extra))


def assert_node_serves(node, path="/after"):
    r = curl(node.url(path), http="2")
    assert r.status == 200, "a fresh client after the attack got %s" % r.status


def h2_node(spawn_outpost, origin, *settings):
    args = []
    for s in settings:
        args += ["--set", s]
    return spawn_outpost(origin, extra_args=args)


# --------------------------------------------------------------------------------------------
# Behaviour with real clients


def test_curl_miss_then_hit(outpost, origin):
    origin.route("/c", headers=dict(CC, Connection="keep-alive"), body=b"hello h2")
    r1 = curl(outpost.url("/c"), http="2")
    r2 = curl(outpost.url("/c"), http="2")
    assert (r1.status, r2.status) == (200, 200)
    assert (r1.xcache, r2.xcache) == ("MISS", "HIT")
    assert r1.body == r2.body == b"hello h2"
    assert r2.h("content-length") == "8"
    assert "connection" not in r1.headers and "keep-alive" not in r1.headers
    assert origin.count("/c") == 1


def test_alpn_h2_over_tls(outpost, origin):
    origin.route("/tls", headers=CC, body=b"over tls")
    url = client_url(outpost.url("/tls"), "tls2")
    for want in ("MISS", "HIT"):
        p = subprocess.run(["curl", "-sS", "--insecure", "--http2", "-D", "-", "-w",
                            "\nversion=%{http_version}", url], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, p.stderr
        assert out.startswith("HTTP/2 200"), out
        assert "x-cache: %s" % want in out and out.endswith("over tls\nversion=2"), out


def test_curl_head_and_404(outpost, origin):
    origin.route("/h", headers=CC, body=b"0123456789")
    r = curl(outpost.url("/h"), http="2", method="HEAD")
    assert r.status == 200 and r.h("content-length") == "10"
    origin.route("/missing", status=404, headers=CC, body=b"nope")
    r = curl(outpost.url("/missing"), http="2")
    assert r.status == 404 and r.body == b"nope"


def test_nghttp_frames_and_settings(spawn_outpost, origin):
    node = h2_node(spawn_outpost, origin, "h2_max_concurrent_streams=7", "h2_stream_window=128k")
    origin.route("/n", headers=CC, body=b"x" * 1000)
    p = subprocess.run(["nghttp", "-nv", "-t", "10", node.url("/n")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7" in out
    assert "SETTINGS_INITIAL_WINDOW_SIZE(0x04):131072" in out
    assert "(stream_id=13) :status: 200" in out
    assert "recv DATA frame <length=1000, flags=0x01, stream_id=13>" in out
    assert "recv GOAWAY" not in out


def test_h2load_cached_object(outpost, origin):
    origin.route("/load", headers=CC, body=b"L" * 2048)
    assert curl(outpost.url("/load"), http="2").status == 200
    p = subprocess.run(["h2load", "-c4", "-m16", "-n2000", outpost.url("/load")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode(errors="replace")
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 2000 2xx" in out, out
    assert origin.count("/load") == 1


def test_concurrent_streams_limit(spawn_outpost, origin):
    node = h2_node(spawn_outpost, origin, "h2_max_concurrent_streams=4")
    gate = threading.Event()
    origin.route("/slow", headers={"Cache-Control": "no-store"}, body=b"s", gate=gate)
    c = H2Client(node)
    try:
        # Sent before our SETTINGS arrive, so the client library cannot hold them back.
        sids = [c.request(node, "/slow?%d" % i) for i in range(8)]
        assert c.pump(lambda: len(c.resets) >= 4, timeout=10), c.resets
        refused = [s for s in sids if c.resets.get(s) == h2.errors.ErrorCodes.REFUSED_STREAM]
        assert len(refused) == 4, c.resets
        wait_for(lambda: origin.inflight("/slow") == 4, msg="4 streams at the origin")
        gate.set()
        served = [s for s in sids if s not in refused]
        assert c.pump(lambda: all(s in c.ended for s in served), timeout=10)
        assert [c.status(s) for s in served] == [200] * 4
        assert origin.max_inflight("/slow") == 4 and origin.count("/slow") == 4
        assert c.goaway is None
    finally:
        gate.set()
        c.close()


def test_large_object_and_small_stream_share_a_connection(outpost, origin):
    size = 8 << 20
    origin.route("/big", body=lambda req: (200, dict(CC), large_body_iter(size)), length=size)
    origin.route("/small", headers=CC, body=b"small")
    c = H2Client(outpost)
    try:
        big = c.request(outpost, "/big")
        # the small request goes out once the big body is flowing on the same connection
        assert c.pump(lambda: len(c.data.get(big, b"")) >= 256 * 1024, timeout=20)
        small = c.request(outpost, "/small")
        assert c.pump(lambda: big in c.ended and small in c.ended, timeout=60)
        assert c.status(big) == 200 and c.status(small) == 200
        assert bytes(c.data[small]) == b"small"
        assert c.order.index(small) < c.order.index(big), "the small stream waited for 8 MiB"
        assert len(c.data[big]) == size
        assert hashlib.sha256(bytes(c.data[big])).hexdigest() == large_body_digest(size)
    finally:
        c.close()


@pytest.mark.parametrize("window_bits", [16, 20, 30])
def test_cached_object_with_any_client_window(outpost, origin, window_bits):
    """A 1 MiB hit is produced faster than the socket drains: with a window large enough that
    flow control never stops the stream, the node must go on producing frames once the socket
    buffer empties (it once stalled at 512 KiB here)."""
    size = 1 << 20
    origin.route("/win", body=lambda req: (200, dict(CC), large_body_iter(size)), length=size)
    assert curl(outpost.url("/win")).status == 200  # stored
    p = subprocess.run(["nghttp", "-nv", "-t", "10", "-w", str(window_bits), "-W",
                        str(window_bits), outpost.url("/win")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, text=True)
    got = sum(int(m) for m in re.findall(r"recv DATA frame <length=(\d+)", p.stdout))
    assert p.returncode == 0 and got == size, (p.returncode, got)
    assert "x-cache: HIT" in p.stdout


def test_post_body_reaches_origin(outpost, origin):
    body = bytes(range(256)) * 8192  # 2 MiB: past the stream window and the 1 MiB buffer
    origin.route("/post", headers={"Cache-Control": "no-store"},
                 body=lambda req: (200, {}, hashlib.sha256(req.body).hexdigest().encode()))
    r = curl(outpost.url("/post"), http="2", method="POST", data=body)
    assert r.status == 200
    assert r.body == hashlib.sha256(body).hexdigest().encode()
    req = origin.last("/post")
    assert req.method == "POST" and req.body == body


def test_cookie_crumbs_joined(outpost, origin):
    origin.route("/ck", headers={"Cache-Control": "no-store"}, body=b"ok")
    c = H2Client(outpost)
    try:
        sid = c.request(outpost, "/ck", extra=[("cookie", "a=1"), ("cookie", "b=2")])
        assert c.pump(lambda: sid in c.ended)
        assert c.status(sid) == 200
        assert origin.last("/ck").header("cookie") == "a=1; b=2"
    finally:
        c.close()


def test_get_ended_after_its_head_is_cacheable(outpost, origin):
    """A GET whose stream ends in an empty DATA frame after the HEADERS (allowed; quic-go does
    the same over HTTP/3) is a request without a body: stored and then served from the cache,
    not BYPASS. A GET that really has a body still goes to the origin with it."""
    origin.route("/late-end", headers={"Cache-Control": "max-age=60"}, body=b"late")
    c = H2Client(outpost)
    try:
        xcache = []
        for _ in range(2):
            sid = c.request(outpost, "/late-end", end=False)
            time.sleep(0.2)  # the head alone first: the node must wait for the end
            c.conn.send_data(sid, b"", end_stream=True)
            c.flush()
            assert c.pump(lambda: sid in c.ended)
            assert c.status(sid) == 200 and bytes(c.data[sid]) == b"late"
            xcache.append(c.headers[sid].get("x-cache"))
        assert xcache == ["MISS", "HIT"], xcache
        assert origin.count("/late-end") == 1
        origin.route("/get-body", headers={"Cache-Control": "no-store"}, body=b"seen")
        sid = c.request(outpost, "/get-body", end=False)
        c.conn.send_data(sid, b"payload", end_stream=True)
        c.flush()
        assert c.pump(lambda: sid in c.ended)
        assert c.status(sid) == 200 and origin.last("/get-body").body == b"payload"
    finally:
        c.close()


def test_malformed_request_is_reset(outpost, origin):
    s = raw_h2(outpost)
    try:
        enc = hpack.Encoder()
        block = enc.encode([(":method", "GET"), (":scheme", "http"),
                            (":authority", outpost.addr)])  # no :path
        s.sendall(frame(1, 0x5, 1, block))
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                t == 3 for t, _, _, _ in frames_of(data)):
            s.settimeout(1)
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                break
            data += d
        rst = [p for t, _, sid, p in frames_of(data) if t == 3 and sid == 1]
        assert rst and struct.unpack(">I", rst[0])[0] == 1, "no RST_STREAM PROTOCOL_ERROR"
    finally:
        s.close()
    assert_node_serves(outpost)


# --------------------------------------------------------------------------------------------
# Attacks


def test_rapid_reset_goaway(spawn_outpost, origin):
    node = h2_node(spawn_outpost, origin, "h2_max_resets_per_second=20")
    c = H2Client(node)
    try:
        for i in range(400):
            try:
                sid = c.request(node, "/rr?%d" % i)
                c.conn.reset_stream(sid)
                c.flush()
            except OSError:
                break
        assert c.pump(lambda: c.closed, timeout=10), "connection still open after 400 resets"
        assert c.goaway == ENHANCE_YOUR_CALM
    finally:
        c.close()
    assert origin.count() < 400
    assert_node_serves(node)


def test_continuation_flood_goaway(outpost, origin):
    s = raw_h2(outpost)
    try:
        out = frame(1, 0x1, 1, request_block(outpost, "/cf"))  # END_STREAM, no END_HEADERS
        out += frame(9, 0, 1) * 200
        try:
            s.sendall(out)
        except OSError:
            pass
        data, closed = read_until_closed(s)
        assert closed, "connection open after 200 CONTINUATION frames"
        assert ENHANCE_YOUR_CALM in goaway_codes(data)
    finally:
        s.close()
    assert origin.count("/cf") == 0
    assert_node_serves(outpost)


def test_header_fields_too_large_get_431(outpost, origin):
    c = H2Client(outpost)
    try:
        big = [("x-big-%d" % i, "v" * 2000) for i in range(20)]  # 40 KiB > max_header_bytes
        sid = c.request(outpost, "/hdr", extra=big)
        assert c.pump(lambda: sid in c.ended or sid in c.resets)
        assert c.status(sid) == 431
        sid2 = c.request(outpost, "/hdr2")
        assert c.pump(lambda: sid2 in c.ended)
        assert c.status(sid2) == 200 and c.goaway is None
    finally:
        c.close()
    assert origin.count("/hdr") == 0


def test_hpack_bomb_goaway(outpost, origin):
    s = raw_h2(outpost)
    try:
        enc = hpack.Encoder()
        # one 4000-byte field enters the dynamic table, then 1-byte references repeat it:
        # 200 of them decode to 800 KB from a 4 KB frame
        block = enc.encode([(":method", "GET"), (":scheme", "http"),
                            (":authority", outpost.addr), (":path", "/bomb")]
                           + [("x-bomb", "b" * 4000)] * 200)
        assert len(block) < 16384
        s.sendall(frame(1, 0x5, 1, block))
        data, closed = read_until_closed(s)
        assert closed and ENHANCE_YOUR_CALM in goaway_codes(data)
    finally:
        s.close()
    assert origin.count("/bomb") == 0
    assert_node_serves(outpost)


CONTROL_FLOODS = {
    "ping": frame(6, 0, 0, b"12345678"),
    "settings": frame(4, 0, 0),
    "priority": frame(2, 0, 3, struct.pack(">IB", 0, 15)),
    "window_update": frame(8, 0, 0, struct.pack(">I", 1)),
    "empty_data": frame(0, 0, 1),
}


@pytest.mark.parametrize("kind", sorted(CONTROL_FLOODS))
def test_control_frame_flood_goaway(spawn_outpost, origin, kind):
    """Cheap frames at 3000 in about a second while the client reads every ACK (so nghttp2's
    outbound ACK queue never fills): our control-frame bucket must end the connection."""
    node = h2_node(spawn_outpost, origin, "h2_max_control_frames_per_second=500")
    s = raw_h2(node)
    try:
        if kind == "empty_data":  # a POST stream left open for the empty DATA frames
            s.sendall(frame(1, 0x4, 1, request_block(node, "/flood")))
        one = CONTROL_FLOODS[kind]
        data = bytearray()
        sent = 0
        try:
            for _ in range(30):
                s.sendall(one * 100)
                sent += 100
                s.settimeout(0.02)
                try:
                    d = s.recv(1 << 20)
                except socket.timeout:
                    continue
                if not d:
                    break
                data += d
        except OSError:
            pass
        rest, closed = read_until_closed(s)
        data += rest
        assert closed, "connection open after %d %s frames" % (sent, kind)
        assert ENHANCE_YOUR_CALM in goaway_codes(bytes(data))
    finally:
        s.close()
    assert "control frame flood" in node.stderr_text()
    assert_node_serves(node)


def test_zero_window_stall_closes(spawn_outpost, origin):
    node = h2_node(spawn_outpost, origin, "send_timeout=1s")
    origin.route("/zw", headers=CC, body=b"z" * 100000)
    assert curl(node.url("/zw"), http="2").status == 200
    c = H2Client(node, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    c.auto_ack = False
    try:
        t0 = time.monotonic()
        sid = c.request(node, "/zw")
        assert c.pump(lambda: c.closed, timeout=10), "stalled connection not closed"
        took = time.monotonic() - t0
        assert c.status(sid) == 200 and sid not in c.ended
        assert c.goaway == ENHANCE_YOUR_CALM
        assert 0.8 <= took <= 5, "closed after %.2fs with send_timeout=1s" % took
    finally:
        c.close()
    assert_node_serves(node)


def test_idle_connection_closed(spawn_outpost, origin):
    node = h2_node(spawn_outpost, origin, "idle_timeout=1s")
    c = H2Client(node)
    try:
        sid = c.request(node, "/idle")
        assert c.pump(lambda: sid in c.ended) and c.status(sid) == 200
        t0 = time.monotonic()
        assert c.pump(lambda: c.closed, timeout=10), "idle connection not closed"
        assert 0.8 <= time.monotonic() - t0 <= 5
        assert c.goaway == h2.errors.ErrorCodes.NO_ERROR
    finally:
        c.close()


def test_graceful_shutdown_sends_goaway_and_finishes_stream(spawn_outpost, origin):
    node = spawn_outpost(origin)
    gate = threading.Event()
    origin.route("/inflight", headers={"Cache-Control": "no-store"}, body=b"done", gate=gate)
    p = subprocess.Popen(["nghttp", "-nv", "-t", "20", node.url("/inflight")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(
        ln.decode(errors="replace") for ln in p.stdout), daemon=True)
    reader.start()
    stopper = None
    rc = []
    try:
        wait_for(lambda: origin.inflight("/inflight") == 1, msg="request at the origin")
        stopper = threading.Thread(target=lambda: rc.append(node.stop()), daemon=True)
        stopper.start()
        # the stream is still open when the final GOAWAY (naming it) arrives
        wait_for(lambda: any("last_stream_id=13" in ln for ln in list(lines)), timeout=10,
                 msg="the final GOAWAY")
        gate.set()
        p.wait(30)
        reader.join(10)
        out = "".join(lines)
    finally:
        gate.set()
        if p.poll() is None:
            p.kill()
            p.wait(5)
        if stopper:
            stopper.join(20)
    assert rc == [0]
    assert p.returncode == 0, out
    goaways = re.findall(r"recv GOAWAY frame.*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
    assert goaways[:2] == [("2147483647", "NO_ERROR"), ("13", "NO_ERROR")], out
    assert out.index("recv GOAWAY") < out.index(":status: 200"), "GOAWAY after the response"
    assert "recv DATA frame <length=4, flags=0x01, stream_id=13>" in out, out
