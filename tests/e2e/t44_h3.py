"""t44: HTTP/3 (edge/h3): what is particular to QUIC. The behavioural cache tests run over HTTP/3
too (protocol tls3, h3curl on quic-go); here, with Debian's gtlsclient (ngtcp2's own client),
headless Chromium and raw UDP: the cache pipeline over gtlsclient (MISS then HIT, large
objects, POST bodies), Alt-Svc on TCP responses, Retry, stateless reset, Version Negotiation,
garbage datagrams, many connections on several workers (kernel steering, no forwarding), a
client that goes silent, graceful stop, and a browser loading a page and its assets over h3."""

import os
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import HOST, curl, free_port, gtlsclient_get, wait_for
from origin import pattern_bytes

MIB = 1 << 20


def cacheable(origin, path, body, **headers):
    h = {"Cache-Control": "max-age=300", "Content-Type": "application/octet-stream"}
    h.update(headers)
    origin.route(path, body=body, headers=h)


def udp_exchange(port, datagrams, wait=1.0):
    """Send raw datagrams to the node's QUIC port; return the replies received within `wait`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for d in datagrams:
            s.sendto(d, (HOST, port))
        replies = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return replies
            s.settimeout(left)
            try:
                replies.append(s.recvfrom(65536)[0])
            except socket.timeout:
                return replies
    finally:
        s.close()


def short_header(dcid, n=60):
    """A short-header (1-RTT) packet to connection ID `dcid`, padded to `n` bytes."""
    return bytes([0x40]) + dcid + os.urandom(n - 1 - len(dcid))


def test_gtlsclient_miss_then_hit(spawn_outpost, origin):
    node = spawn_outpost(origin)
    body = pattern_bytes("h3-small", 5000)
    cacheable(origin, "/h3/a", body)
    first, = gtlsclient_get(node.url("/h3/a"))
    assert first.status == 200 and first.body == body
    assert first.h("x-cache") == "MISS"
    # two more on one connection: both from the cache
    rs = gtlsclient_get(node.url("/h3/a"), n=2)
    assert [r.status for r in rs] == [200, 200]
    assert all(r.body == body and r.h("x-cache") == "HIT" for r in rs), [r.headers for r in rs]
    assert origin.count("/h3/a") == 1
    lines = [l for l in node.access_log_lines() if "/h3/a" in l]
    assert len(lines) == 3 and all('"GET /h3/a HTTP/3.0"' in l for l in lines), lines


def test_gtlsclient_large_object_and_collapsing(spawn_outpost, origin):
    node = spawn_outpost(origin, workers=2)
    body = pattern_bytes("h3-large", 3 * MIB + 123)
    cacheable(origin, "/h3/big", body)
    # four requests at once on one connection: one origin fetch, every body complete
    rs = gtlsclient_get(node.url("/h3/big"), n=4, download_bodies=True, timeout=60)
    assert all(r.status == 200 and r.body == body for r in rs)
    assert origin.count("/h3/big") == 1
    # and from the cache
    r, = gtlsclient_get(node.url("/h3/big"), timeout=60, download_bodies=True)
    assert r.body == body and r.h("x-cache") == "HIT"


def test_gtlsclient_post_body_reaches_origin(spawn_outpost, origin):
    node = spawn_outpost(origin)
    origin.route("/h3/post", body=b"thanks")
    data = pattern_bytes("h3-upload", 700 * 1024)
    r, = gtlsclient_get(node.url("/h3/post"), method="POST", data=data, timeout=60)
    assert r.status == 200 and r.body == b"thanks"
    got = origin.last("/h3/post")
    assert got.method == "POST" and got.body == data


def test_alt_svc_advertises_h3_on_tls_only(spawn_outpost, origin):
    node = spawn_outpost(origin)
    origin.route("/alt", body=b"x", headers={"Cache-Control": "max-age=60"})
    for proto in ("tls1.1", "tls2"):
        r = curl(node.url("/alt"), http=proto)
        assert r.h("alt-svc") == 'h3=":%d"; ma=86400' % node.h3_port, (proto, r.headers)
    assert curl(node.url("/alt")).h("alt-svc") is None, "plaintext: no Alt-Svc"
    r = curl(node.url("/alt"), http="tls3")
    assert r.status == 200 and r.h("alt-svc") is None, "no Alt-Svc over HTTP/3 itself"
    off = spawn_outpost(origin, extra_args=["--set", "alt_svc=off"])
    assert curl(off.url("/alt"), http="tls2").h("alt-svc") is None
    ma = spawn_outpost(origin, extra_args=["--set", "alt_svc_max_age=1h"])
    assert curl(ma.url("/alt"), http="tls2").h("alt-svc") == 'h3=":%d"; ma=3600' % ma.h3_port


def test_retry_validates_addresses(spawn_outpost, origin):
    node = spawn_outpost(origin, extra_args=["--set", "h3_retry=on"])
    origin.route("/r", body=b"after retry")
    r, = gtlsclient_get(node.url("/r"))
    assert r.status == 200 and r.body == b"after retry"
    assert node.metric("outpost_quic_retry_sent_total") >= 1
    r = curl(node.url("/r"), http="tls3")  # quic-go follows the Retry too
    assert r.status == 200
    assert node.metric("outpost_quic_retry_sent_total") >= 2
    assert node.metric("outpost_quic_retry_failed_total") == 0


def test_retry_under_load_threshold(spawn_outpost, origin):
    """h3_retry_under_load: new clients get a Retry only while that many handshakes are in
    progress on the worker; with 0 never (gtlsclient still succeeds either way)."""
    origin.route("/u", body=b"u")
    never = spawn_outpost(origin, extra_args=["--set", "h3_retry_under_load=0"])
    assert gtlsclient_get(never.url("/u"))[0].status == 200
    assert never.metric("outpost_quic_retry_sent_total") == 0
    # one Initial that never completes its handshake counts as in progress; with the
    # threshold at 1 the next client must go through a Retry
    busy = spawn_outpost(origin, extra_args=["--set", "h3_retry_under_load=1"])
    stuck = subprocess.Popen(["gtlsclient", "-q", "--handshake-timeout=20s", "-r", "1.0", HOST,
                              str(busy.h3_port), "https://%s:%d/u" % (HOST, busy.h3_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # -r 1.0 drops everything it receives: its handshake stays in progress
        wait_for(lambda: busy.metric("outpost_connections") >= 1, 10, msg="handshake started")
        assert gtlsclient_get(busy.url("/u"))[0].status == 200
        assert busy.metric("outpost_quic_retry_sent_total") >= 1
    finally:
        stuck.kill()
        stuck.wait()


def test_stateless_reset_for_unknown_connections(spawn_outpost, origin, tmp_path):
    secret = tmp_path / "h3.secret"
    secret.write_bytes(os.urandom(32))
    node = spawn_outpost(origin, extra_args=["--set", "h3_secret_file=%s" % secret])
    cid = bytes([0]) + os.urandom(17)
    replies = udp_exchange(node.h3_port, [short_header(cid, 80)])
    assert len(replies) == 1, replies
    reset = replies[0]
    assert len(reset) < 80 and len(reset) >= 21, "smaller than the packet that provoked it"
    assert reset[0] & 0xc0 == 0x40, "looks like a short-header packet"
    again = udp_exchange(node.h3_port, [short_header(cid, 80)])[0]
    assert again[-16:] == reset[-16:], "the token depends only on the connection ID"
    other = udp_exchange(node.h3_port, [short_header(bytes([0]) + os.urandom(17), 80)])[0]
    assert other[-16:] != reset[-16:]
    # the same secret after a restart: the same token, so clients of the old process learn
    # at once that their connection is gone
    node.restart(kill=True)
    assert udp_exchange(node.h3_port, [short_header(cid, 80)])[0][-16:] == reset[-16:]
    # too small to answer without amplifying: nothing
    assert udp_exchange(node.h3_port, [short_header(cid, 21)], wait=0.5) == []
    assert node.metric("outpost_quic_stateless_reset_sent_total") >= 1


def test_version_negotiation(spawn_outpost, origin):
    node = spawn_outpost(origin)
    dcid, scid = os.urandom(8), os.urandom(8)
    pkt = bytes([0xc0]) + bytes.fromhex("1a2a3a4a") + bytes([8]) + dcid + bytes([8]) + scid
    pkt += os.urandom(1200 - len(pkt))
    replies = udp_exchange(node.h3_port, [pkt])
    assert len(replies) == 1
    vn = replies[0]
    assert vn[0] & 0x80 and vn[1:5] == b"\0\0\0\0", "a Version Negotiation packet"
    assert vn[6:14] == scid and vn[15:23] == dcid, "connection IDs echoed, swapped"
    assert bytes.fromhex("00000001") in vn[23:], "offers QUIC v1"
    # a short one (not a possible client Initial) gets nothing
    assert udp_exchange(node.h3_port, [pkt[:100]], wait=0.5) == []


def test_garbage_datagrams_are_dropped(spawn_outpost, origin):
    node = spawn_outpost(origin, workers=2)
    origin.route("/g", body=b"still here")
    rnd = [os.urandom(n) for n in (1, 2, 5, 7, 20, 60, 300, 1199, 1200, 1400)]
    # long headers of every type with nonsense inside, for a QUIC v1 that does not exist
    longs = [bytes([0xc0 | t << 4]) + b"\0\0\0\1" + bytes([20]) + os.urandom(20) + bytes([0]) +
             os.urandom(1200) for t in range(4)]
    truncated = [bytes([0xc0, 0, 0, 0, 1, 20]) + os.urandom(5), bytes([0xc0, 0, 0, 0, 1])]
    udp_exchange(node.h3_port, (rnd + longs + truncated) * 20, wait=0.5)
    assert node.alive()
    assert node.metric("outpost_quic_datagrams_dropped_total") >= 20
    r, = gtlsclient_get(node.url("/g"))
    assert r.status == 200 and r.body == b"still here"


def test_many_connections_on_several_workers(spawn_outpost, origin):
    """Every packet of a connection must reach the worker that owns it: 40 connections at
    once on 4 workers, each with several requests, all complete; the kernel's steering
    program delivered every packet (no forwarding between workers)."""
    node = spawn_outpost(origin, workers=4)
    small = pattern_bytes("mc-small", 2000)
    big = pattern_bytes("mc-big", 300 * 1024)
    cacheable(origin, "/mc/s", small)
    cacheable(origin, "/mc/b", big)
    errors = []

    def client(i):
        try:
            rs = gtlsclient_get([node.url("/mc/s"), node.url("/mc/b")], n=6, timeout=60,
                                download_bodies=True)
            for j, r in enumerate(rs):
                want = small if j % 2 == 0 else big
                if r.status != 200 or r.body != want:
                    errors.append("client %d request %d: %s, %d bytes" % (i, j, r.status,
                                                                           len(r.body)))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append("client %d: %s" % (i, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert node.metric("outpost_quic_datagrams_forwarded_total") == 0
    wait_for(lambda: node.metric("outpost_connections") == 0, 30,
             msg="every QUIC connection closed and accounted for")


def test_silent_client_is_freed_by_idle_timeout(spawn_outpost, origin):
    node = spawn_outpost(origin, extra_args=["--set", "idle_timeout=1s"])
    origin.route("/slow", body=b"x" * 100, headers={"Cache-Control": "no-store"})
    # a client that completes its handshake and then stops: SIGSTOP after the first bytes
    p = subprocess.Popen(["gtlsclient", "-q", "--timeout=60s", "-n", "1000", HOST,
                          str(node.h3_port), "https://%s:%d/slow" % (HOST, node.h3_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any("/slow" in l for l in node.access_log_lines()), 10,
                 msg="requests served on the connection")
        p.send_signal(signal.SIGSTOP)
        wait_for(lambda: node.metric("outpost_connections") == 0, 15,
                 msg="the silent client's connection freed")
    finally:
        p.kill()
        p.wait()
    assert node.alive()


def test_graceful_stop_finishes_an_h3_download(spawn_outpost, origin):
    node = spawn_outpost(origin)
    body = pattern_bytes("h3-stop", 2 * MIB)
    origin.route("/stop", body=body, headers={"Cache-Control": "max-age=60"}, body_delay=0.5)
    result = {}

    def get():
        result["r"] = gtlsclient_get(node.url("/stop"), timeout=60)

    t = threading.Thread(target=get)
    t.start()
    wait_for(lambda: origin.count("/stop") == 1, 10, msg="the fetch started")
    node.proc.send_signal(signal.SIGTERM)
    t.join(60)
    r, = result["r"]
    assert r.status == 200 and r.body == body
    node.proc.wait(15)
    node.expected_exit = True


def test_chromium_page_and_assets_over_h3(spawn_outpost, origin):
    node = spawn_outpost(origin)
    page = b"""<!doctype html><html><head><script src="/app.js"></script></head><body>
<img id="i" src="/pixel.gif" onload="done()"><pre id="out">pending</pre>
<script>
function done() {
  var nav = performance.getEntriesByType('navigation')[0].nextHopProtocol;
  var res = performance.getEntriesByType('resource').map(function (e) {
    return e.name.replace(/^.*\\//, '') + '=' + e.nextHopProtocol; }).sort().join(' ');
  document.getElementById('out').textContent = 'nav=' + nav + ' ' + res + ' js=' + window.js;
}
</script></body></html>"""
    gif = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000"
                        "010001000002024401003b")
    cacheable(origin, "/index.html", page, **{"Content-Type": "text/html"})
    cacheable(origin, "/app.js", b"window.js = 'ran';", **{"Content-Type": "text/javascript"})
    cacheable(origin, "/pixel.gif", gif, **{"Content-Type": "image/gif"})
    dom = harness.chromium_h3_nexthop(node.url("/index.html"), harness.test_certs()[0])
    assert "nav=h3 app.js=h3 pixel.gif=h3 js=ran" in dom, dom[-2000:]
    lines = node.access_log_lines()
    for path in ("/index.html", "/app.js", "/pixel.gif"):
        assert any('"GET %s HTTP/3.0" 200' % path in l for l in lines), (path, lines)


def _h3_get(name, port, certs, path):
    """h3curl to `name` (SNI and :authority) at 127.0.0.1:port, verifying against the test CA:
    succeeds only if the node presents the certificate for that name."""
    return curl("https://%s:%d%s" % (name, port, path), http="tls3", check=False,
                extra=["--resolve", "%s:%d:%s" % (name, port, HOST), "--cacert",
                       str(certs / "ca.pem")])


def test_sni_certificates_and_sighup_reload(spawn_outpost, origin, certs, tmp_path):
    """HTTP/3 picks the site certificate by SNI like the TCP listeners, and SIGHUP swaps in
    renewed certificates for new QUIC connections (a bad one is refused, the old one stays)."""
    live = tmp_path / "live"
    live.mkdir()
    (live / "c.pem").write_bytes((certs / "default-ec.pem").read_bytes())
    (live / "c.key").write_bytes((certs / "default-ec.key").read_bytes())
    port = free_port()
    config = ("tls_listen %s:%d\nh3_listen %s:%d\n"
              "tls_certificate %s/c.pem\ntls_certificate_key %s/c.key\n"
              "site a.example {\n origin %s\n tls_certificate %s/a.pem\n"
              " tls_certificate_key %s/a.key\n}\n"
              "site * {\n origin %s\n}\n"
              % (HOST, port, HOST, port, live, live, origin.addr, certs, certs, origin.addr))
    node = spawn_outpost(None, config=config, tls=False)
    origin.route("/sni", body=b"hello", headers={"Cache-Control": "max-age=60"})
    r = _h3_get("a.example", port, certs, "/sni")
    assert r.status == 200 and r.body == b"hello", r
    r = _h3_get("default.test", port, certs, "/sni")
    assert r.status == 200, "the default certificate for other names"
    assert _h3_get("chain.example", port, certs, "/sni").status == 0, "not yet its certificate"
    # good: the chain certificate replaces the default one
    (live / "c.pem").write_bytes((certs / "chain.pem").read_bytes())
    (live / "c.key").write_bytes((certs / "chain.key").read_bytes())
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: "TLS certificates reloaded" in node.stderr_text(), msg="reload logged")
    assert _h3_get("chain.example", port, certs, "/sni").status == 200
    assert _h3_get("a.example", port, certs, "/sni").status == 200
    # bad: a key that does not match; the chain certificate keeps serving over HTTP/3 too
    (live / "c.key").write_bytes((certs / "a.key").read_bytes())
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in node.stderr_text(), msg="refusal logged")
    assert _h3_get("chain.example", port, certs, "/sni").status == 200
