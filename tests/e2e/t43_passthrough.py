"""t43: TLS passthrough (edge/passthrough.c): a passthrough listener reads the ClientHello,
routes the raw connection by its SNI to a backend, and relays the bytes both ways without
decrypting them. Backends are real servers on loopback: raw TCP servers that record every byte
and answer with their own, and a real TLS server reached with curl. Covers byte-exact relaying
(4 MiB both ways at once), back-pressure (a side that does not read stops the other), half-close,
routing (exact, longest *.suffix, "*", no match), garbage, a stalled ClientHello, a backend
that refuses, accounting, and a graceful stop with a relay open."""

import hashlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

import harness
from harness import HOST, free_port, wait_for

CAPTURES = harness.REPO / "tests" / "fuzz" / "corpus" / "tls_clienthello"
CURL_HELLO = (CAPTURES / "seed-curl_www_example_com").read_bytes()  # SNI www.example.com
NOSNI_HELLO = (CAPTURES / "seed-openssl_nosni").read_bytes()
ALERT_UNRECOGNIZED_NAME = b"\x15\x03\x03\x00\x02\x02\x70"
MIB = 1 << 20


def client_hello(sni):
    """A minimal, well-formed TLS 1.3 ClientHello record with server_name `sni` (None: none)."""
    exts = b""
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + struct.pack(">H", len(name)) + name
        exts += struct.pack(">HHH", 0, len(entry) + 2, len(entry)) + entry
    exts += struct.pack(">HHBH", 43, 3, 2, 0x0304)  # supported_versions: TLS 1.3
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" +
            struct.pack(">H", len(exts)) + exts)
    msg = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(msg)) + msg


class RawBackend:
    """A TCP server on 127.0.0.1 that records every byte of every connection and sends `reply`
    (bytes, or a callable returning bytes) as soon as it accepts (after_eof=False) or once it
    has read the client's FIN (after_eof=True), then half-closes. With gated=True it reads
    nothing until open_gate()."""

    def __init__(self, name, reply=None, gated=False, small_buffers=False, after_eof=False):
        self.name = name
        self.after_eof = after_eof
        self.reply = reply if reply is not None else ("reply from %s" % name).encode()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if small_buffers:  # inherited by accepted sockets: no autotuning
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (HOST, self.port)
        self.conns = []  # one dict per accepted connection
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def open_gate(self):
        self.gate.set()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"data": bytearray(), "eof": False, "sent": 0, "done": False}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        c.settimeout(60)
        reply = self.reply() if callable(self.reply) else self.reply

        def send():
            try:
                for i in range(0, len(reply), 65536):
                    c.sendall(reply[i:i + 65536])
                    rec["sent"] += len(reply[i:i + 65536])
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        if not self.after_eof:
            sender.start()
        try:
            self.gate.wait(60)
            while True:
                d = c.recv(1 << 16)
                if not d:
                    rec["eof"] = True
                    break
                rec["data"] += d
            if self.after_eof:
                sender.start()
            sender.join(60)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            rec["done"] = True
            c.close()

    def count(self):
        with self.lock:
            return len(self.conns)

    def last(self):
        with self.lock:
            return self.conns[-1]

    def close(self):
        self.stop = True
        self.gate.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def backends():
    made = []

    def make(name, **kw):
        b = RawBackend(name, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def pt_config(port, routes, extra=""):
    lines = ["passthrough_listen %s:%d" % (HOST, port)]
    lines += ["passthrough %s %s" % (name, addr) for name, addr in routes]
    lines += [extra, "site * {", "    origin 127.0.0.1:9", "}", ""]
    return "\n".join(lines)


def spawn_pt(spawn_outpost, routes, extra=""):
    port = free_port()
    node = spawn_outpost(config=pt_config(port, routes, extra))
    node.pt_port = port
    return node


def exchange(port, data, timeout=10.0):
    """Send `data`, half-close, read until the peer closes. Returns (bytes, closed)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            if isinstance(e, socket.timeout):
                raise
            # closed by the node before everything was sent (refused connections)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(1 << 16)
            except ConnectionResetError:
                return bytes(out), True
            if not d:
                return bytes(out), True
            out += d
        return bytes(out), False
    finally:
        s.close()


def test_bytes_relayed_unchanged_both_ways(spawn_outpost, backends):
    reply = os.urandom(4 * MIB)
    be = backends("exact", reply=reply)
    node = spawn_pt(spawn_outpost, [("www.example.com", be.addr)])
    assert "passthrough on %s:%d" % (HOST, node.pt_port) in node.stderr_text()
    upload = CURL_HELLO + os.urandom(4 * MIB)
    # both directions at once: the client sends in a thread while it reads
    s = socket.create_connection((HOST, node.pt_port), timeout=30)
    got = bytearray()
    err = []

    def send():
        try:
            s.sendall(upload)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        d = s.recv(1 << 16)
        if not d:
            break
        got += d
    t.join(30)
    s.close()
    assert not err, err
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(reply).hexdigest(), \
        "client received %d bytes, backend sent %d" % (len(got), len(reply))
    wait_for(lambda: be.last()["done"], 10, msg="backend connection finished")
    rec = be.last()
    assert rec["eof"], "backend did not see the client's FIN"
    assert bytes(rec["data"][:len(CURL_HELLO)]) == CURL_HELLO
    assert hashlib.sha256(rec["data"]).hexdigest() == hashlib.sha256(upload).hexdigest()
    assert be.count() == 1
    wait_for(lambda: node.metric("outpost_connections") == 0, 5, msg="connections gauge at 0")
    assert node.metric("outpost_bytes_received_total") == len(upload)
    assert node.metric("outpost_bytes_sent_total") == len(reply)


def test_half_close_keeps_the_other_direction(spawn_outpost, backends):
    """The client's FIN reaches the backend as a FIN, and the backend's answer, written only
    after it saw that FIN, still reaches the client, followed by the backend's FIN."""
    be = backends("half", reply=b"answer after your FIN", after_eof=True)
    node = spawn_pt(spawn_outpost, [("*", be.addr)])
    data, closed = exchange(node.pt_port, client_hello("half.example") + b"question")
    assert closed and data == b"answer after your FIN"
    rec = be.last()
    assert rec["eof"] and bytes(rec["data"]).endswith(b"question")
    wait_for(lambda: node.metric("outpost_connections") == 0, 5, msg="connections gauge at 0")


def _stalled(counter, quiet=0.5):
    state = {"v": -1, "t": time.monotonic()}

    def cond():
        v = counter()
        now = time.monotonic()
        if v != state["v"]:
            state["v"], state["t"] = v, now
            return False
        return now - state["t"] >= quiet

    return cond


def test_back_pressure_bounds_buffering(spawn_outpost, backends):
    """A backend that does not read stops the client's upload, and a client that does not read
    stops the backend's download, well before everything is sent; nothing is lost after."""
    total = 64 * MIB  # beyond every socket buffer on the path (tcp_rmem max is 32 MiB)
    reply = os.urandom(total)
    be = backends("slow", reply=reply, gated=True, small_buffers=True)
    node = spawn_pt(spawn_outpost, [("*", be.addr)])
    upload = client_hello("bp.example") + os.urandom(total)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(60)
    s.connect((HOST, node.pt_port))
    sent = [0]
    err = []

    def send():
        try:
            for i in range(0, len(upload), 65536):
                s.sendall(upload[i:i + 65536])
                sent[0] += len(upload[i:i + 65536])
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    wait_for(lambda: be.count() == 1, 10, msg="backend connected")
    wait_for(_stalled(lambda: sent[0]), 30, msg="client upload stalls")
    wait_for(_stalled(lambda: be.last()["sent"]), 30, msg="backend download stalls")
    assert sent[0] < total, "the whole upload was accepted while the backend read nothing"
    assert be.last()["sent"] < total, "the whole download was accepted while the client read nothing"
    be.open_gate()
    got = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        d = s.recv(1 << 20)
        if not d:
            break
        got += d
    t.join(60)
    s.close()
    assert not err, err
    assert len(got) == total and hashlib.sha256(got).digest() == hashlib.sha256(reply).digest()
    wait_for(lambda: be.last()["done"], 10, msg="backend finished")
    rec = be.last()
    assert len(rec["data"]) == len(upload)
    assert hashlib.sha256(rec["data"]).digest() == hashlib.sha256(upload).digest()


@pytest.fixture
def tls_backend(tmp_path):
    """A real TLS server (Python ssl, certificate from the openssl CLI, CN tls-backend.test)
    answering one small HTTP/1.1 response per connection; records the SNI it saw."""
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-subj", "/CN=tls-backend.test", "-days", "1"],
                   check=True, capture_output=True, timeout=30)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    seen = []
    ctx.sni_callback = lambda sock, name, c: seen.append(name) and None
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen(16)
    ls.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(10)
                with ctx.wrap_socket(c, server_side=True) as tc:
                    req = b""
                    while b"\r\n\r\n" not in req and len(req) < 65536:
                        d = tc.recv(4096)
                        if not d:
                            break
                        req += d
                    body = b"hello from the TLS backend\n"
                    tc.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n"
                               b"\r\n%s" % (len(body), body))
            except (OSError, ssl.SSLError):
                c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield {"addr": "%s:%d" % (HOST, ls.getsockname()[1]), "seen": seen}
    stop.set()
    ls.close()
    th.join(5)


def test_curl_tls_session_is_with_the_backend(spawn_outpost, tls_backend, backends):
    other = backends("other")
    node = spawn_pt(spawn_outpost, [("secure.example", tls_backend["addr"]), ("*", other.addr)])
    url = "https://secure.example:%d/" % node.pt_port
    p = subprocess.run(["curl", "-sS", "-v", "-k", "--max-time", "20", "--resolve",
                        "secure.example:%d:%s" % (node.pt_port, HOST), url],
                       capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    assert p.stdout == b"hello from the TLS backend\n"
    assert "CN=tls-backend.test" in err, err
    assert tls_backend["seen"] == ["secure.example"]
    assert other.count() == 0


def _route(port, sni):
    data, closed = exchange(port, client_hello(sni) + b"ping")
    return data, closed


def test_routing_exact_suffix_default(spawn_outpost, backends):
    a, b, w, deep, d = (backends(n) for n in ("a", "b", "wild", "deep", "default"))
    node = spawn_pt(spawn_outpost, [("a.example", a.addr), ("b.example", b.addr),
                                    ("*.wild.example", w.addr),
                                    ("*.deep.wild.example", deep.addr), ("*", d.addr)])
    cases = [("a.example", a), ("B.Example", b), ("x.wild.example", w),
             ("y.x.wild.example", w), ("z.deep.wild.example", deep), ("wild.example", d),
             ("c.example", d), ("a.example.org", d), (None, d)]
    for sni, want in cases:
        before = want.count()
        data, closed = _route(node.pt_port, sni)
        assert closed and data == ("reply from %s" % want.name).encode(), (sni, data)
        assert want.count() == before + 1
        wait_for(lambda: want.last()["done"], 5, msg="backend %s finished" % want.name)
        assert bytes(want.last()["data"]).endswith(b"ping")
    assert a.count() == 1 and b.count() == 1 and w.count() == 2 and deep.count() == 1
    assert d.count() == 4
    # a real client's bytes without SNI go to the default too
    data, closed = exchange(node.pt_port, NOSNI_HELLO)
    assert data == b"reply from default" and d.count() == 5


def test_no_route_closes_with_alert(spawn_outpost, backends):
    a = backends("a")
    node = spawn_pt(spawn_outpost, [("a.example", a.addr), ("*.wild.example", a.addr)])
    for sni in ("nomatch.example", "wild.example", None):
        data, closed = _route(node.pt_port, sni)
        assert closed, sni
        assert data == ALERT_UNRECOGNIZED_NAME, (sni, data)
    data, closed = _route(node.pt_port, "a.example")
    assert data == b"reply from a"
    assert a.count() == 1
    wait_for(lambda: node.metric("outpost_connections") == 0, 5, msg="connections gauge at 0")


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
                                     b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # ServerHello
                                     b"\x16\x03\x01\x00\x00", b"\x80\x2e\x01\x03\x01" * 8],
                         ids=["http", "server_hello", "empty_record", "sslv2"])
def test_not_tls_is_closed(spawn_outpost, backends, garbage):
    d = backends("default")
    node = spawn_pt(spawn_outpost, [("*", d.addr)])
    data, closed = exchange(node.pt_port, garbage)
    assert closed and data == b""
    assert d.count() == 0


def test_stalled_client_hello_times_out(spawn_outpost, backends):
    d = backends("default")
    node = spawn_pt(spawn_outpost, [("*", d.addr)], extra="tls_handshake_timeout 600ms")
    s = socket.create_connection((HOST, node.pt_port), timeout=10)
    t0 = time.monotonic()
    s.sendall(CURL_HELLO[:len(CURL_HELLO) // 2])
    s.settimeout(10)
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    elapsed = time.monotonic() - t0
    s.close()
    assert data == b""
    assert 0.5 <= elapsed < 5, "closed after %.2fs, timeout is 0.6s" % elapsed
    assert d.count() == 0
    wait_for(lambda: node.metric("outpost_connections") == 0, 5, msg="connections gauge at 0")


def test_backend_refusing_closes_client(spawn_outpost):
    dead = "%s:%d" % (HOST, free_port())  # nothing listens there
    node = spawn_pt(spawn_outpost, [("*", dead)])
    data, closed = _route(node.pt_port, "down.example")
    assert closed and data == b""
    harness.expect_counter(node, "outpost_upstream_errors_total", 1, {"reason": "connect"})


def test_max_connections_counts_relays(spawn_outpost, backends):
    be = backends("held", gated=True)
    node = spawn_pt(spawn_outpost, [("*", be.addr)], extra="max_connections 2")
    held = []
    for i in range(2):
        s = socket.create_connection((HOST, node.pt_port), timeout=10)
        s.sendall(client_hello("held%d.example" % i))
        held.append(s)
    wait_for(lambda: be.count() == 2, 10, msg="two relays up")
    assert node.metric("outpost_connections") == 2
    data, closed = _route(node.pt_port, "third.example")
    assert closed and data == b""
    assert be.count() == 2
    harness.expect_counter(node, "outpost_http_rejected_total", 1,
                           {"reason": "too_many_connections"})
    for s in held:
        s.close()
    be.open_gate()
    wait_for(lambda: node.metric("outpost_connections") == 0, 10, msg="connections gauge at 0")
    data, closed = _route(node.pt_port, "fourth.example")
    assert data == b"reply from held"


def test_graceful_stop_lets_a_relay_finish(spawn_outpost, backends):
    be = backends("slow", gated=True)
    node = spawn_pt(spawn_outpost, [("*", be.addr)])
    s = socket.create_connection((HOST, node.pt_port), timeout=15)
    s.sendall(client_hello("drain.example") + b"in flight")
    wait_for(lambda: be.count() == 1, 10, msg="relay up")
    node.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping gracefully" in node.stderr_text(), 5, msg="SIGTERM handled")
    time.sleep(0.3)  # not for semantics: give the worker a moment past its stop event
    assert node.alive(), "the node exited with a relay open"
    be.open_gate()
    s.shutdown(socket.SHUT_WR)
    got = bytearray()
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        got += d
    s.close()
    assert got == b"reply from slow"
    assert bytes(be.last()["data"]).endswith(b"in flight")
    node.proc.wait(15)
    node.expected_exit = True
    assert node.proc.returncode == 0

