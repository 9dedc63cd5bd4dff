"""
t41_tls: TLS termination and bridging with real clients (curl, openssl s_client).

Certificates come from scripts/gen-test-certs.sh (a test CA, leaves for default.test,
a.example, *.wild.example and 127.0.0.1, a chain through an intermediate, an OCSP response).
Every check that a certificate was chosen is made by a client that verifies it against the test
CA, so a wrong choice fails the handshake rather than passing quietly.
"""

import os
import signal
import socket
import ssl
import subprocess

import pytest

import harness
from harness import HOST, curl, free_port, wait_for
from origin import Origin

REPO = harness.REPO


def _node(spawn_outpost, origin, certs, extra="", site_extra="", sites=""):
    """A node with a TLS listener configured in its file (not by flags), so that SIGHUP reads
    the certificates again. Returns (node, tls_port, config_path)."""
    tls_port = free_port()
    config = ("tls_listen %s:%d\n"
              "tls_certificate %s/default-ec.pem\n"
              "tls_certificate_key %s/default-ec.key\n"
              "%s"
              "site a.example {\n origin %s\n tls_certificate %s/a.pem\n"
              " tls_certificate_key %s/a.key\n}\n"
              "site *.wild.example {\n origin %s\n tls_certificate %s/wild.pem\n"
              " tls_certificate_key %s/wild.key\n}\n"
              "%s"
              "site * {\n origin %s\n%s}\n"
              % (HOST, tls_port, certs, certs, extra, origin.addr, certs, certs, origin.addr,
                 certs, certs, sites, origin.addr, site_extra))
    node = spawn_outpost(None, config=config, tls=False)
    return node, tls_port, node.dir / "outpost.conf"


def _curl_https(name, port, certs, path="/", extra=(), check=True):
    return curl("https://%s:%d%s" % (name, port, path), check=check,
                extra=["--resolve", "%s:%d:%s" % (name, port, HOST), "--cacert",
                       str(certs / "ca.pem")] + list(extra))


def _peer_subject(port, servername, extra=()):
    """The subject of the certificate the node presents, as openssl s_client prints it."""
    args = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)]
    args += ["-servername", servername] if servername else ["-noservername"]
    p = subprocess.run(args + list(extra), input=b"", stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    out = p.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("subject="):
            return line, out
    return "", out


def test_sni_selects_the_site_certificate(spawn_outpost, origin, certs):
    node, port, _ = _node(spawn_outpost, origin, certs)
    origin.route("/sni", body=b"hello", headers={"Cache-Control": "max-age=60"})
    # curl verifies the chain and the name: each succeeds only with the right certificate
    for name in ("a.example", "x.wild.example", "default.test", "localhost"):
        r = _curl_https(name, port, certs, "/sni")
        assert r.status == 200 and r.body == b"hello", name
    assert "CN = a.example" in _peer_subject(port, "a.example")[0]
    assert "CN = *.wild.example" in _peer_subject(port, "deep.wild.example")[0]
    assert "CN = default.test" in _peer_subject(port, "unknown.example")[0]
    assert "CN = default.test" in _peer_subject(port, None)[0]
    # the name is verified: a.example's certificate does not pass for b.example
    with pytest.raises(harness.CurlError):
        _curl_https("b.example", port, certs, "/sni")  # gets default.test's: not for b.example


def test_tls_versions_and_alpn(spawn_outpost, origin, certs):
    node, port, _ = _node(spawn_outpost, origin, certs)
    for v in (["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]):
        r = _curl_https("a.example", port, certs, "/v", extra=v + ["-w", "%{http_version}"])
        assert r.status == 200
    _, out = _peer_subject(port, "a.example", ["-alpn", "http/1.1"])
    assert "ALPN protocol: http/1.1" in out


def test_min_version_1_3_refuses_1_2(spawn_outpost, origin, certs):
    node, port, _ = _node(spawn_outpost, origin, certs, extra="tls_min_version 1.3\n")
    r = _curl_https("a.example", port, certs, "/v", extra=["--tlsv1.3"])
    assert r.status == 200
    with pytest.raises(harness.CurlError):
        _curl_https("a.example", port, certs, "/v", extra=["--tlsv1.2", "--tls-max", "1.2"])


def test_session_resumption_with_tickets(spawn_outpost, origin, certs, tmp_path):
    node, port, _ = _node(spawn_outpost, origin, certs)
    sess = tmp_path / "sess.pem"
    for v in ("-tls1_3", "-tls1_2"):
        if sess.exists():
            sess.unlink()
        # -ign_eof and a whole request: s_client reads until the node closes, so the ticket
        # (sent after the handshake) is in the saved session before it exits
        base = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername",
                "a.example", "-ign_eof", v]
        req = b"GET /t HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"
        p1 = subprocess.run(base + ["-sess_out", str(sess)], input=req, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=20)
        assert sess.exists(), p1.stdout.decode(errors="replace")
        p2 = subprocess.run(base + ["-sess_in", str(sess)], input=req, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=20)
        out = p2.stdout.decode(errors="replace")
        assert "Reused, TLSv1." in out, (v, out)


def test_ocsp_staple(spawn_outpost, origin, certs):
    node, port, conf = _node(spawn_outpost, origin, certs, sites=(
        "site default.test {\n origin %s\n tls_certificate %s/default-rsa.pem\n"
        " tls_certificate_key %s/default-rsa.key\n tls_ocsp_staple %s/ocsp.der\n}\n"
        % (origin.addr, certs, certs, certs)))
    _, out = _peer_subject(port, "default.test", ["-status"])
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    _, out = _peer_subject(port, "a.example", ["-status"])
    assert "OCSP response: no response sent" in out, out


def _tls_keepalive(port, certs, name):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    s = socket.create_connection((HOST, port), timeout=10)
    return ctx.wrap_socket(s, server_hostname=name)


def _get_on(s, name, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, name)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed"
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
             if ln.lower().startswith(b"content-length:")][0])
    while len(rest) < n:
        d = s.recv(65536)
        assert d, "connection closed"
        rest += d
    return head.split(b" ")[1], rest


def test_reload_good_and_bad_certificate(spawn_outpost, origin, certs, tmp_path):
    # the default certificate lives in files that are replaced in place, as renewals do
    live = tmp_path / "live"
    live.mkdir()
    (live / "c.pem").write_bytes((certs / "default-ec.pem").read_bytes())
    (live / "c.key").write_bytes((certs / "default-ec.key").read_bytes())
    node, port, conf = _node(spawn_outpost, origin, certs)
    text = conf.read_text().replace("%s/default-ec.pem" % certs, "%s/c.pem" % live)
    text = text.replace("%s/default-ec.key" % certs, "%s/c.key" % live)
    conf.write_text(text)
    node.stop()
    node.start()
    origin.route("/r", body=b"ok", headers={"Cache-Control": "max-age=60"})
    held = _tls_keepalive(port, certs, "default.test")
    assert _get_on(held, "default.test", "/r") == (b"200", b"ok")
    assert "CN = default.test" in _peer_subject(port, "default.test")[0]

    # good: the chain certificate (through the intermediate) replaces it
    (live / "c.pem").write_bytes((certs / "chain.pem").read_bytes())
    (live / "c.key").write_bytes((certs / "chain.key").read_bytes())
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: "TLS certificates reloaded" in node.stderr_text(), msg="reload logged")
    assert "CN = chain.example" in _peer_subject(port, "default.test")[0]
    r = _curl_https("chain.example", port, certs, "/r")
    assert r.status == 200  # the intermediate is served: curl knows only the root
    # the connection opened before the reload still works
    assert _get_on(held, "default.test", "/r") == (b"200", b"ok")

    # bad: a key that does not match; the old certificate keeps serving
    (live / "c.key").write_bytes((certs / "a.key").read_bytes())
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in node.stderr_text(), msg="refusal logged")
    assert "does not match" in node.stderr_text() or "c.key" in node.stderr_text()
    assert "CN = chain.example" in _peer_subject(port, "default.test")[0]
    assert _curl_https("chain.example", port, certs, "/r").status == 200
    assert _get_on(held, "default.test", "/r") == (b"200", b"ok")
    held.close()


def test_hsts_and_https_redirect(spawn_outpost, origin, certs):
    node, port, _ = _node(spawn_outpost, origin, certs,
                          site_extra=" https_redirect on\n hsts_max_age 1d\n"
                                     " hsts_include_subdomains on\n")
    # harness.curl on the plaintext listener
    r = curl(node.url("/page?q=1"), headers={"Host": "shop.test"})
    assert r.status == 308
    assert r.headers["location"] == ["https://shop.test:%d/page?q=1" % port]
    assert "strict-transport-security" not in r.headers  # never over plaintext
    r = _curl_https("localhost", port, certs, "/page")
    assert r.status == 200
    assert r.headers["strict-transport-security"] == ["max-age=86400; includeSubDomains"]
    # a site without the options: no redirect, no HSTS
    r = curl(node.url("/page"), headers={"Host": "a.example"})
    assert r.status == 200 and "strict-transport-security" not in r.headers


def test_handshake_timeout_and_garbage(spawn_outpost, origin, certs):
    node, port, _ = _node(spawn_outpost, origin, certs, extra="tls_handshake_timeout 500ms\n")
    r = harness.raw(port, b"", read_timeout=5)
    assert r.closed and r.data == b"", "idle TLS connection not closed after the timeout"
    r = harness.raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5)
    assert r.closed and b"HTTP/1.1" not in r.data  # plaintext on a TLS port: an alert, closed
    assert _curl_https("a.example", port, certs, "/").status == 200  # still serving


# ---- bridging: TLS to the origin ---------------------------------------------------------


@pytest.fixture
def tls_origin(certs):
    o = Origin(tls=(str(certs / "a.pem"), str(certs / "a.key"))).start()
    yield o
    o.shutdown()


def _bridge(spawn_outpost, tls_origin, certs, opts):
    config = ("site * {\n origin %s\n upstream_tls on\n%s}\n" % (tls_origin.addr, opts))
    return spawn_outpost(None, config=config)


def test_bridging_verifies_and_reuses(spawn_outpost, tls_origin, certs):
    node = _bridge(spawn_outpost, tls_origin, certs,
                   " upstream_tls_ca %s/ca.pem\n upstream_tls_name a.example\n" % certs)
    tls_origin.route("/b", body=b"over tls", headers={"Cache-Control": "max-age=60"})
    r1 = curl(node.url("/b"))
    r2 = curl(node.url("/b"))
    assert (r1.status, r1.body, r1.xcache) == (200, b"over tls", "MISS")
    assert r2.xcache == "HIT"
    for i in range(3):
        assert curl(node.url("/p%d" % i), headers={"Cache-Control": "no-cache"}).status == 200
    conns = {rq.conn_id for rq in tls_origin.requests()}
    assert len(conns) == 1, "TLS upstream connections were not reused: %s" % conns


@pytest.mark.parametrize("opts,why", [
    (" upstream_tls_ca {certs}/ca.pem\n upstream_tls_name wrong.example\n", "Hostname mismatch"),
    (" upstream_tls_ca {certs}/other-ca.pem\n upstream_tls_name a.example\n", "verify failed"),
], ids=["wrong_name", "unknown_ca"])
def test_bridging_refuses_bad_certificates(spawn_outpost, tls_origin, certs, opts, why):
    node = _bridge(spawn_outpost, tls_origin, certs, opts.format(certs=certs))
    r = curl(node.url("/x"))
    assert r.status == 502
    assert tls_origin.count("/x") == 0  # no request was sent over the unverified connection
    wait_for(lambda: why in node.stderr_text(), msg="the reason in the log")


def test_bridging_origin_that_is_not_tls_fails_at_once(spawn_outpost):
    """A bridged origin that answers the ClientHello with plaintext and keeps the connection
    open: the TLS error must fail the request at once (502, counted as a connect error), not
    after upstream_first_byte_timeout (504). Regression: libevent ignores a filter's error
    result, so the request used to wait for the timeout."""
    lsock = socket.socket()
    lsock.bind((HOST, 0))
    lsock.listen(8)
    held = []

    def serve():
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            held.append(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    import threading
    threading.Thread(target=serve, daemon=True).start()
    try:
        config = ("upstream_first_byte_timeout 60s\nupstream_retries 0\n"
                  "site * {\n origin %s:%d\n upstream_tls on\n}\n" % (HOST, lsock.getsockname()[1]))
        node = spawn_outpost(None, config=config)
        r = curl(node.url("/plain"), timeout=20)
        assert r.status == 502
        m = node.metrics()
        assert harness.metric_sum(m, "outpost_upstream_errors_total", {"reason": "connect"}) >= 1
        assert harness.metric_sum(m, "outpost_upstream_errors_total", {"reason": "timeout"}) == 0
    finally:
        lsock.close()
        for c in held:
            c.close()


def test_bridging_without_verification(spawn_outpost, tls_origin, certs):
    node = _bridge(spawn_outpost, tls_origin, certs, " upstream_tls_verify off\n")
    r = curl(node.url("/nv"))
    assert r.status == 200 and tls_origin.count("/nv") == 1


def test_https_origin_flag(spawn_outpost, tls_origin, certs):
    """--origin https://... bridges, verifying against the system store: our test CA is not
    in it, so the request fails with 502 (and the certificate is never trusted silently)."""
    node = spawn_outpost(None, extra_args=["--origin", "https://%s" % tls_origin.addr])
    assert curl(node.url("/sys")).status == 502
    assert tls_origin.count("/sys") == 0


@pytest.mark.parametrize("ca,healthy", [("ca.pem", True), ("other-ca.pem", False)],
                         ids=["verified", "unknown_ca"])
def test_health_checks_over_tls(spawn_outpost, tls_origin, certs, ca, healthy):
    """Active checks of a bridged origin pool speak TLS with the site's CA and name: they pass
    against the right CA and fail (the server goes out) against another one."""
    tls_origin.route("/hc", body=b"ok")
    config = ("upstream pool {\n server %s\n health_check /hc\n health_interval 200ms\n"
              " health_fall 1\n}\n"
              "site * {\n origin_pool pool\n upstream_tls on\n upstream_tls_ca %s/%s\n"
              " upstream_tls_name a.example\n}\n" % (tls_origin.addr, certs, ca))
    node = spawn_outpost(None, config=config)

    def server():
        up = [u for u in node.status()["upstreams"] if u["name"] == "pool"][0]
        return up["servers"][0]
    if healthy:
        wait_for(lambda: server()["checks"] >= 2, msg="checks run")
        s = server()
        assert (s["state"], s["checks_failed"], s["last_check_status"]) == ("healthy", 0, 200)
        assert tls_origin.count("/hc") >= 2
    else:
        wait_for(lambda: server()["state"] == "unhealthy", msg="a check that cannot verify fails")
        assert server()["last_check_status"] == -1 and tls_origin.count("/hc") == 0
        wait_for(lambda: "TLS handshake failed" in node.stderr_text(), msg="the reason logged")
