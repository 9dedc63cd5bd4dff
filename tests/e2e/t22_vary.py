"""t22: Vary (RFC 9111 4.1): one stored variant per combination of the nominated request headers,
each served only to matching requests; Vary: * is never served from the cache."""

from harness import curl


def _vary_route(origin, path, vary, names):
    def h(req):
        key = "|".join("%s=%s" % (n, req.header(n, "")) for n in names)
        return (200, {"Cache-Control": "max-age=60", "Vary": vary},
                ("%s %s n%d" % (path, key, origin.count(path))).encode())
    origin.route(path, body=h)


def test_vary_accept_encoding_two_variants(outpost, origin, proto):
    _vary_route(origin, "/v", "Accept-Encoding", ["Accept-Encoding"])
    gz = {"Accept-Encoding": "gzip"}
    br = {"Accept-Encoding": "br"}
    r1 = curl(outpost.url("/v"), headers=gz, http=proto)
    r2 = curl(outpost.url("/v"), headers=br, http=proto)
    assert (r1.xcache, r2.xcache) == ("MISS", "MISS")
    assert r1.body == b"/v Accept-Encoding=gzip n1"
    assert r2.body == b"/v Accept-Encoding=br n2"
    for _ in range(2):
        h1 = curl(outpost.url("/v"), headers=gz, http=proto)
        h2 = curl(outpost.url("/v"), headers=br, http=proto)
        assert (h1.xcache, h2.xcache) == ("HIT", "HIT")
        assert (h1.body, h2.body) == (r1.body, r2.body)
    assert origin.count("/v") == 2
    # a third value is a third variant, not one of the others
    r3 = curl(outpost.url("/v"), headers={"Accept-Encoding": "zstd"}, http=proto)
    assert r3.xcache == "MISS" and r3.body == b"/v Accept-Encoding=zstd n3"
    # the origin saw the nominated header of each request as sent
    assert [r.header("accept-encoding") for r in origin.requests("/v")] == ["gzip", "br",
                                                                             "zstd"]


def test_vary_absent_header_is_its_own_variant(outpost, origin, proto):
    _vary_route(origin, "/va", "X-Lang", ["X-Lang"])
    a = curl(outpost.url("/va"), http=proto)
    b = curl(outpost.url("/va"), headers={"X-Lang": "fr"}, http=proto)
    a2 = curl(outpost.url("/va"), http=proto)
    b2 = curl(outpost.url("/va"), headers={"X-Lang": "fr"}, http=proto)
    assert a.body != b.body
    assert (a2.xcache, a2.body) == ("HIT", a.body)
    assert (b2.xcache, b2.body) == ("HIT", b.body)


def test_vary_star_never_served_from_cache(outpost, origin, proto):
    origin.route("/vs", body=lambda req: (200, {"Cache-Control": "max-age=60", "Vary": "*"},
                                          b"n%d" % origin.count("/vs")))
    bodies = [curl(outpost.url("/vs"), http=proto) for _ in range(3)]
    assert [r.body for r in bodies] == [b"n1", b"n2", b"n3"]
    assert all(r.xcache != "HIT" for r in bodies)


def test_vary_two_headers(outpost, origin, proto):
    _vary_route(origin, "/v2", "X-A, X-B", ["X-A", "X-B"])
    combos = [{"X-A": "1", "X-B": "1"}, {"X-A": "1", "X-B": "2"}, {"X-A": "2", "X-B": "1"}]
    first = [curl(outpost.url("/v2"), headers=c, http=proto) for c in combos]
    assert [r.xcache for r in first] == ["MISS"] * 3
    assert len({r.body for r in first}) == 3
    again = [curl(outpost.url("/v2"), headers=c, http=proto) for c in combos]
    assert [r.xcache for r in again] == ["HIT"] * 3
    assert [r.body for r in again] == [r.body for r in first]
    assert origin.count("/v2") == 3
    # matching only one of the two headers is not a match
    r = curl(outpost.url("/v2"), headers={"X-A": "2", "X-B": "2"}, http=proto)
    assert r.xcache == "MISS" and origin.count("/v2") == 4


def test_vary_header_case_insensitive_names(outpost, origin, proto):
    _vary_route(origin, "/vc", "x-token", ["X-Token"])
    curl(outpost.url("/vc"), headers={"X-Token": "t"}, http=proto)
    r = curl(outpost.url("/vc"), headers={"x-token": "t"}, http=proto)
    assert r.xcache == "HIT"


def test_vary_variant_requested_right_after_another(outpost, origin):
    # back to back on one connection: the second request arrives while the first variant's
    # fetch has just completed (and may still be being written); it must not be given it
    from harness import RawConn, get_req
    _vary_route(origin, "/vb", "Accept-Encoding", ["Accept-Encoding"])
    with RawConn(outpost) as c:
        c.send(get_req("/vb", extra="Accept-Encoding: gzip\r\n"))
        r1 = c.read_response()
        c.send(get_req("/vb", extra="Accept-Encoding: br\r\n"))
        r2 = c.read_response()
    assert r1.body == b"/vb Accept-Encoding=gzip n1"
    assert r2.body == b"/vb Accept-Encoding=br n2", \
        "the br request got %r (X-Cache %s)" % (r2.body, r2.xcache)
    assert origin.count("/vb") == 2
