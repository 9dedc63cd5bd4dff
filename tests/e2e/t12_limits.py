"""t12: the documented limits (README: 408, 413, 414, 431; options of the reference set with
--set): URI length, head size, header count, body size (Content-Length and chunked), the header
timeout (slowloris), the connection cap and the idle keep-alive timeout. Each limit is checked
on both sides: just under it works, over it is refused and counted."""

import time

from harness import RawConn, get_req, parse_responses, raw, wait_for


def _spawn(spawn_outpost, origin, *sets):
    args = []
    for s in sets:
        args += ["--set", s]
    return spawn_outpost(origin, extra_args=args)


def _status(res):
    return parse_responses(res.data)[0].status if res.data else None


def test_max_uri_length(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_uri_length=1024")
    ok = raw(node, get_req("/" + "a" * 900), read_timeout=5)
    assert _status(ok) == 200
    before = node.metric("outpost_http_rejected_total", {"reason": "uri_too_long"})
    res = raw(node, get_req("/" + "b" * 2000), read_timeout=5)
    assert _status(res) == 414
    assert origin.count("/" + "b" * 2000) == 0
    assert node.metric("outpost_http_rejected_total", {"reason": "uri_too_long"}) == before + 1


def test_max_header_bytes(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_header_bytes=4k")
    ok = raw(node, get_req("/hb", extra="X-Pad: %s\r\n" % ("p" * 2000)), read_timeout=5)
    assert _status(ok) == 200
    res = raw(node, get_req("/hb2", extra="X-Pad: %s\r\n" % ("p" * 8000)), read_timeout=5)
    assert _status(res) == 431
    assert origin.count("/hb2") == 0
    assert node.metric("outpost_http_rejected_total", {"reason": "headers_too_large"}) >= 1


def test_max_headers(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_headers=20")
    few = "".join("X-H%d: v\r\n" % i for i in range(10))
    many = "".join("X-H%d: v\r\n" % i for i in range(30))
    assert _status(raw(node, get_req("/mh", extra=few), read_timeout=5)) == 200
    assert _status(raw(node, get_req("/mh2", extra=many), read_timeout=5)) == 431
    assert origin.count("/mh2") == 0


def test_max_body_size_content_length(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_body_size=1m")
    origin.route("/up", body=b"ok")
    small = b"s" * 1000
    res = raw(node, b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(small)
              + small, read_timeout=3)
    assert _status(res) == 200
    before = node.metric("outpost_http_rejected_total", {"reason": "body_too_large"})
    with RawConn(node) as c:
        # the head announces 2 MiB; the edge must answer 413 without waiting for the body
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 << 20))
        r = c.read_response(timeout=5)
    assert r.status == 413
    assert origin.count("/up") == 1
    assert node.metric("outpost_http_rejected_total", {"reason": "body_too_large"}) == before + 1


def test_max_body_size_chunked(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_body_size=1m")
    origin.route("/upc", body=b"ok")
    piece = b"c" * 65536
    with RawConn(node) as c:
        c.send(b"POST /upc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            for _ in range(40):  # 2.5 MiB, bounded
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the edge may close once over the limit; the 413 is still in our buffer
        try:
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response(timeout=5)
    assert r.status == 413
    for req in origin.requests("/upc"):  # if anything reached the origin it was not complete
        assert len(req.body) <= 1 << 20


def test_header_timeout_slowloris(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "header_timeout=1s")
    before = node.metric("outpost_http_rejected_total", {"reason": "header_timeout"})
    t0 = time.monotonic()
    with RawConn(node) as c:
        c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # head never completes
        closed = c.wait_closed(timeout=6)
        data = bytes(c.buf)
    elapsed = time.monotonic() - t0
    assert closed, "a partial head held the connection open for 6 s with header_timeout=1s"
    assert elapsed >= 0.9, "closed after %.2fs, before the 1 s header timeout" % elapsed
    if data:
        assert parse_responses(data)[0].status == 408, data[:200]
    assert origin.count("/slow") == 0
    wait_for(lambda: node.metric("outpost_http_rejected_total",
                                 {"reason": "header_timeout"}) == before + 1, 5)


def test_max_connections(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "max_connections=5")
    conns = [RawConn(node) for _ in range(5)]
    try:
        wait_for(lambda: node.metric("outpost_connections") == 5, 5,
                 msg="outpost_connections == 5")
        before = node.metric("outpost_http_rejected_total", {"reason": "too_many_connections"})
        sixth = RawConn(node)
        try:
            try:
                sixth.send(get_req("/sixth"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert sixth.wait_closed(timeout=3), "the 6th connection was kept open"
            data = bytes(sixth.buf)
            if data:
                assert parse_responses(data)[0].status in (503, 429), data[:200]
        finally:
            sixth.close()
        assert origin.count("/sixth") == 0
        wait_for(lambda: node.metric("outpost_http_rejected_total",
                                     {"reason": "too_many_connections"}) == before + 1, 5)
        # the five admitted connections still work
        conns[0].send(get_req("/first"))
        assert conns[0].read_response().status == 200
    finally:
        for c in conns:
            c.close()
    # once they are gone, new connections are accepted again
    wait_for(lambda: node.metric("outpost_connections") == 0, 5)
    assert _status(raw(node, get_req("/after", extra="Connection: close\r\n"))) == 200


def test_idle_timeout_closes_keepalive(spawn_outpost, origin):
    node = _spawn(spawn_outpost, origin, "idle_timeout=1s")
    with RawConn(node) as c:
        c.send(get_req("/idle"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.wait_closed(timeout=6), "idle connection still open after 6 s (idle_timeout=1s)"
        assert time.monotonic() - t0 >= 0.9
