"""t00: the most basic checks. First the harness itself (the scripted origin, curl and raw
parsing, the metrics parser) so that a broken harness is not mistaken for a broken edge, then one
request through the edge, a HIT, Via, the TLS libraries outpostd must not link, /status and
/metrics."""

import hashlib
import json
import subprocess
import threading

import pytest

import harness
from harness import RawConn, curl, get_req, parse_metrics, parse_responses


# ---- the harness, against the scripted origin alone ------------------------------------------

def test_harness_origin_default_route(origin):
    r1 = curl(origin.url + "/a?x=1")
    r2 = curl(origin.url + "/a?x=1")
    assert r1.status == 200 and r1.h("cache-control") == "max-age=60"
    assert r1.body != r2.body and r1.body.startswith(b"/a?x=1 #")
    assert origin.count("/a") == 2 and origin.count("/b") == 0
    assert origin.last("/a").method == "GET"


def test_harness_origin_chunked_iterator_and_conditional(origin):
    origin.route("/c", headers={"Cache-Control": "max-age=5"}, body=iter([b"ab", b"cd", b"e"]))
    r = curl(origin.url + "/c")
    assert r.status == 200 and r.body == b"abcde" and r.h("transfer-encoding") == "chunked"
    origin.route("/e", body=b"x" * 10, etag='"v1"')
    assert curl(origin.url + "/e", headers={"If-None-Match": '"v1"'}).status == 304
    assert curl(origin.url + "/e", headers={"If-None-Match": '"v2"'}).status == 200


def test_harness_origin_request_bodies_and_expect(origin):
    body = harness.pattern_bytes("post", 3 << 20)  # curl sends Expect: 100-continue for this
    r = curl(origin.url + "/p", method="POST", data=body)
    assert r.status == 200
    assert origin.last("/p").body == body
    r = curl(origin.url + "/p2", method="POST", data=b"hello",
             headers={"Transfer-Encoding": "chunked"})
    assert origin.last("/p2").body == b"hello"
    assert origin.last("/p2").header("transfer-encoding") == "chunked"


def test_harness_origin_gate_and_pipelining(origin):
    gate = threading.Event()
    origin.route("/g", body=b"held", gate=gate)
    with RawConn(origin.port) as c:
        c.send(get_req("/g") + get_req("/x") + get_req("/g", method="HEAD"))
        origin.wait_count("/g", 1)
        assert c.read_at_least(1, timeout=0.3) == b""  # nothing before the gate opens
        gate.set()
        r1, r2, r3 = (c.read_response(), c.read_response(), c.read_response(head_request=True))
    assert (r1.body, r2.body[:4], r3.status, r3.body) == (b"held", b"/x #", 200, b"")
    assert r3.h("content-length") == "4"


def test_harness_origin_close_and_large_stream(origin):
    origin.route("/close", action="close")
    assert curl(origin.url + "/close", check=False).status == 0
    n = 8 << 20
    origin.route("/big", body=lambda req: (200, {}, harness.large_body_iter(n)))
    r = curl(origin.url + "/big")
    assert len(r.body) == n and hashlib.sha256(r.body).hexdigest() == harness.large_body_digest(n)


def test_harness_parsers():
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n"
            b"T: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n")
    rs = parse_responses(data)
    assert [r.status for r in rs] == [100, 200, 200, 304]
    assert rs[1].body == b"ok" and rs[2].body == b"abc"
    with pytest.raises(ValueError):
        parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    m = parse_metrics('# TYPE a counter\na_total{code="200",cache="HIT"} 3\n'
                      'a_total{cache="MISS",code="200"} 2\nb 1.5\nh_bucket{le="+Inf"} 4\n')
    assert m['a_total{cache="HIT",code="200"}'] == 3
    assert harness.metric_sum(m, "a_total") == 5
    assert harness.metric_sum(m, "a_total", {"cache": "MISS"}) == 2
    assert m["b"] == 1.5


# ---- the edge -----------------------------------------------------------------------------

def test_get_through_edge_then_hit(outpost, origin, proto):
    r1 = curl(outpost.url("/smoke"), http=proto)
    assert r1.status == 200
    assert r1.body.startswith(b"/smoke #1")
    assert r1.xcache == "MISS"
    r2 = curl(outpost.url("/smoke"), http=proto)
    assert r2.status == 200 and r2.xcache == "HIT"
    assert r2.body == r1.body
    assert origin.count("/smoke") == 1
    for r in (r1, r2):
        via = ", ".join(r.headers.get("via", []))
        assert "outpost" in via, "Via: %r" % via
        assert r.age is not None and r.age >= 0


def test_no_openssl_3_linked():
    p = subprocess.run(["ldd", str(harness.outpostd_path())], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    assert "libssl.so.3" not in p.stdout and "libcrypto.so.3" not in p.stdout, p.stdout


def test_status_is_json(outpost):
    r = outpost.admin_get("/status")
    assert r.status == 200
    assert "json" in r.h("content-type", ""), r.headers
    st = json.loads(r.body)
    assert isinstance(st, dict) and st


def test_metrics_parse(outpost):
    curl(outpost.url("/m"))
    r = outpost.admin_get("/metrics")
    assert r.status == 200
    m = parse_metrics(r.body.decode())
    names = {harness.split_key(k)[0] for k in m}
    for n in ("outpost_requests_total", "outpost_connections_total", "outpost_cache_objects",
              "outpost_cache_bytes", "outpost_cache_hit_ratio"):
        assert n in names, "%s missing from /metrics" % n
