"""t10: HTTP/1.1 on the client side of the edge (RFC 9112): keep-alive, pipelining, HTTP/1.0,
Connection: close, HEAD, request bodies (chunked, large, Expect: 100-continue), chunked
responses, unsafe methods bypassing the cache, absolute-form targets. These are H1 by nature, so
most use raw sockets rather than the protocol-parametrised curl."""

import hashlib

import harness
from harness import RawConn, curl, get_req, parse_responses, raw


def test_keep_alive_several_requests_one_connection(outpost, origin):
    before = outpost.metric("outpost_connections_total")
    with RawConn(outpost) as c:
        bodies = []
        for i in range(5):
            c.send(get_req("/ka%d" % i))
            r = c.read_response()
            assert r.status == 200
            assert "close" not in ",".join(r.headers.get("connection", [])).lower()
            bodies.append(r.body)
        # still open: one more request works on the same socket
        c.send(get_req("/ka0"))
        again = c.read_response()
    assert bodies == [("/ka%d #%d" % (i, i + 1)).encode() for i in range(5)]
    assert again.body == bodies[0] and again.xcache == "HIT"
    assert origin.total() == 5
    assert outpost.metric("outpost_connections_total") == before + 1


def test_pipelining_three_requests_one_write(outpost, origin):
    origin.route("/p1", headers={"Cache-Control": "max-age=60"}, body=b"one")
    origin.route("/p2", headers={"Cache-Control": "max-age=60"}, body=b"two" * 1000,
                 chunked=True)
    origin.route("/p3", headers={"Cache-Control": "max-age=60"}, body=b"three")
    with RawConn(outpost) as c:
        c.send(get_req("/p1") + get_req("/p2") + get_req("/p3"))
        rs = [c.read_response() for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 200]
    assert [r.body for r in rs] == [b"one", b"two" * 1000, b"three"]


def test_pipelining_with_head_in_the_middle(outpost, origin):
    origin.route("/ph", headers={"Cache-Control": "max-age=60"}, body=b"0123456789")
    with RawConn(outpost) as c:
        c.send(get_req("/ph") + get_req("/ph", method="HEAD") + get_req("/ph"))
        r1 = c.read_response()
        r2 = c.read_response(head_request=True)
        r3 = c.read_response()
    assert (r1.body, r2.body, r3.body) == (b"0123456789", b"", b"0123456789")
    assert r2.h("content-length") == "10"


def test_http10_without_keep_alive_closes(outpost, origin):
    res = raw(outpost, get_req("/h10", version="HTTP/1.0"), read_timeout=5)
    assert res.closed, "connection left open after an HTTP/1.0 response"
    (r,) = parse_responses(res.data)
    assert r.status == 200 and r.body.startswith(b"/h10 #")


def test_connection_close_honoured(outpost, origin):
    res = raw(outpost, get_req("/cc", extra="Connection: close\r\n") + get_req("/cc2"),
              read_timeout=5)
    assert res.closed
    rs = parse_responses(res.data)
    assert len(rs) == 1, "a request after Connection: close was answered"
    assert rs[0].status == 200
    assert "close" in ",".join(rs[0].headers.get("connection", [])).lower()
    assert origin.count("/cc2") == 0


def test_head_has_get_headers_and_no_body(outpost, origin):
    origin.route("/head", headers={"Cache-Control": "max-age=60", "X-Thing": "t"},
                 body=b"a" * 1234)
    g = curl(outpost.url("/head"))
    h = curl(outpost.url("/head"), method="HEAD")
    assert g.status == h.status == 200
    assert h.h("content-length") == g.h("content-length") == "1234"
    assert h.h("x-thing") == "t"
    assert h.body == b""


def test_head_miss_does_not_break_later_get(outpost, origin):
    origin.route("/hm", headers={"Cache-Control": "max-age=60"}, body=b"full body here")
    with RawConn(outpost) as c:
        c.send(get_req("/hm", method="HEAD"))
        h = c.read_response(head_request=True)
        c.send(get_req("/hm"))
        g = c.read_response()
    assert h.status == 200 and h.h("content-length") == "14"
    assert g.status == 200 and g.body == b"full body here"
    assert g.h("content-length") in (None, "14")
    g2 = curl(outpost.url("/hm"))
    assert g2.body == b"full body here"


def test_chunked_request_body_streamed_to_origin(outpost, origin):
    origin.route("/up", status=201, body=b"created")
    pieces = [b"hello ", b"chunked ", b"x" * 5000, b" world"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with RawConn(outpost) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/octet-stream\r\n\r\n")
        for i in range(0, len(chunked), 1000):  # several writes, framing split anywhere
            c.send(chunked[i:i + 1000])
        r = c.read_response()
    assert r.status == 201 and r.body == b"created"
    assert origin.count("/up") == 1
    assert origin.last("/up").body == b"".join(pieces)
    assert origin.last("/up").method == "POST"


def test_large_post_body_streamed(outpost, origin):
    body = harness.pattern_bytes("large-post", 20 << 20)
    origin.route("/bigpost", body=lambda req: (200, {}, hashlib.sha256(req.body).hexdigest()
                                               .encode()))
    r = curl(outpost.url("/bigpost"), method="POST", data=body, timeout=60)
    assert r.status == 200
    assert r.body.decode() == hashlib.sha256(body).hexdigest()
    assert len(origin.last("/bigpost").body) == len(body)


def test_expect_100_continue(outpost, origin):
    origin.route("/exp", body=lambda req: (200, {}, b"got " + req.body))
    with RawConn(outpost) as c:
        c.send(b"PUT /exp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.read_until(b"\r\n\r\n", timeout=5)
        assert interim.startswith(b"HTTP/1.1 100"), interim[:100]
        c.send(b"abcde")
        rs = []
        deadline_responses = 2
        for _ in range(deadline_responses):
            r = c.read_response(skip_interim=False)
            rs.append(r)
            if r.status >= 200:
                break
    assert rs[0].status == 100
    assert rs[-1].status == 200 and rs[-1].body == b"got abcde"
    assert origin.last("/exp").body == b"abcde"


def test_chunked_response_passed_to_client(outpost, origin, proto):
    pieces = [harness.pattern_bytes("ch%d" % i, 1000 * (i + 1)) for i in range(20)]
    origin.route("/chunked", headers={"Cache-Control": "max-age=60"},
                 body=lambda req: (200, {"Cache-Control": "max-age=60"}, iter(pieces)))
    r1 = curl(outpost.url("/chunked"), http=proto)
    r2 = curl(outpost.url("/chunked"), http=proto)
    assert r1.body == r2.body == b"".join(pieces)
    assert r2.xcache == "HIT"
    # raw framing: a valid chunked or length-delimited message
    with RawConn(outpost) as c:
        c.send(get_req("/chunked"))
        r = c.read_response()
    assert r.body == b"".join(pieces)


def test_post_is_bypass_and_not_cached(outpost, origin, proto):
    origin.route("/form", body=lambda req: (200, {"Cache-Control": "max-age=60"},
                                            ("%s %d" % (req.method, origin.count("/form")))
                                            .encode()))
    p1 = curl(outpost.url("/form"), method="POST", data=b"a=1", http=proto)
    p2 = curl(outpost.url("/form"), method="POST", data=b"a=2", http=proto)
    assert p1.xcache == p2.xcache == "BYPASS"
    assert (p1.body, p2.body) == (b"POST 1", b"POST 2")
    g = curl(outpost.url("/form"), http=proto)
    assert g.body == b"GET 3" and g.xcache == "MISS"
    assert [r.body for r in origin.requests("/form")][:2] == [b"a=1", b"a=2"]


def test_absolute_form_request_target(outpost, origin):
    host = outpost.addr
    with RawConn(outpost) as c:
        c.send(("GET http://%s/abs?q=1 HTTP/1.1\r\nHost: %s\r\n\r\n" % (host, host)).encode())
        r = c.read_response()
    assert r.status == 200 and r.body.startswith(b"/abs?q=1 #")
    req = origin.last("/abs")
    assert req.target == "/abs?q=1", "origin received %r (expected origin-form)" % req.target
    # the same object as the origin-form request for the same Host
    r2 = curl(outpost.url("/abs?q=1"))
    assert r2.xcache == "HIT" and r2.body == r.body
