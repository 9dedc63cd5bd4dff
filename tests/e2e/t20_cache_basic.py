"""t20: the basics of the shared cache (RFC 9111 3 and 4.2.3): what is stored, Age, what is not
stored, request no-store, Authorization, the cache key (Host, query), HEAD from a stored GET.
Observed through X-Cache, Age and the origin's request count."""

from harness import curl

CC60 = {"Cache-Control": "max-age=60"}


def _counter_body(origin, path, headers):
    """A route whose body names the origin request number: b"<path> v<n>"."""
    origin.route(path, body=lambda req: (200, dict(headers),
                                         ("%s v%d" % (path, origin.count(path))).encode()))


def test_cacheable_get_stored_then_hit(outpost, origin, proto):
    _counter_body(origin, "/c", CC60)
    r1 = curl(outpost.url("/c"), http=proto)
    r2 = curl(outpost.url("/c"), http=proto)
    r3 = curl(outpost.url("/c"), http=proto)
    assert (r1.xcache, r2.xcache, r3.xcache) == ("MISS", "HIT", "HIT")
    assert r1.body == r2.body == r3.body == b"/c v1"
    assert origin.count("/c") == 1


def test_age_grows_with_the_clock(outpost, origin, proto):
    origin.route("/age", headers={"Cache-Control": "max-age=600"}, body=b"a")
    r1 = curl(outpost.url("/age"), http=proto)
    assert r1.age is not None and 0 <= r1.age <= 1
    outpost.advance_clock(100)
    r2 = curl(outpost.url("/age"), http=proto)
    assert r2.xcache == "HIT"
    assert 100 <= r2.age <= 102, "Age %s after 100 s" % r2.age
    outpost.advance_clock(200)
    r3 = curl(outpost.url("/age"), http=proto)
    assert r3.xcache == "HIT" and 300 <= r3.age <= 302


def test_upstream_age_is_added(outpost, origin, proto):
    origin.route("/uage", headers={"Cache-Control": "max-age=600", "Age": "50"}, body=b"a")
    r1 = curl(outpost.url("/uage"), http=proto)
    assert 50 <= r1.age <= 52, "Age %s for a response that arrived with Age: 50" % r1.age
    outpost.advance_clock(10)
    r2 = curl(outpost.url("/uage"), http=proto)
    assert r2.xcache == "HIT" and 60 <= r2.age <= 62
    # and the upstream Age counts against freshness: 600 - 50 - 10 = 540 s left
    outpost.advance_clock(560)
    r3 = curl(outpost.url("/uage"), http=proto)
    assert r3.xcache != "HIT" and origin.count("/uage") == 2


def _not_stored(outpost, origin, proto, path, headers, req_headers=None):
    _counter_body(origin, path, headers)
    r1 = curl(outpost.url(path), headers=req_headers, http=proto)
    r2 = curl(outpost.url(path), headers=req_headers, http=proto)
    assert r1.status == r2.status == 200
    assert (r1.body, r2.body) == (("%s v1" % path).encode(), ("%s v2" % path).encode()), \
        "second request served from the cache (X-Cache %s)" % r2.xcache
    assert r2.xcache != "HIT"
    assert origin.count(path) == 2


def test_no_store_response_not_stored(outpost, origin, proto):
    _not_stored(outpost, origin, proto, "/ns", {"Cache-Control": "no-store, max-age=60"})


def test_private_response_not_stored(outpost, origin, proto):
    _not_stored(outpost, origin, proto, "/priv", {"Cache-Control": "private, max-age=60"})


def test_set_cookie_response_not_stored(outpost, origin, proto):
    _not_stored(outpost, origin, proto, "/cookie",
                {"Cache-Control": "max-age=60", "Set-Cookie": "sid=abc; Path=/"})


def test_set_cookie_with_public_is_stored(outpost, origin, proto):
    _counter_body(origin, "/cookiepub",
                  {"Cache-Control": "public, max-age=60", "Set-Cookie": "sid=abc; Path=/"})
    curl(outpost.url("/cookiepub"), http=proto)
    r2 = curl(outpost.url("/cookiepub"), http=proto)
    assert r2.xcache == "HIT" and origin.count("/cookiepub") == 1


def test_request_no_store_is_bypass(outpost, origin, proto):
    _counter_body(origin, "/rns", CC60)
    r1 = curl(outpost.url("/rns"), headers={"Cache-Control": "no-store"}, http=proto)
    assert r1.xcache == "BYPASS"
    r2 = curl(outpost.url("/rns"), http=proto)
    assert r2.xcache == "MISS", "a request with no-store filled the cache"
    # and no-store on a request never reads the stored copy either
    r3 = curl(outpost.url("/rns"), headers={"Cache-Control": "no-store"}, http=proto)
    assert r3.xcache == "BYPASS" and r3.body == b"/rns v3"


def test_authorization_not_shared(outpost, origin, proto):
    _counter_body(origin, "/auth", CC60)
    a = curl(outpost.url("/auth"), headers={"Authorization": "Bearer alice"}, http=proto)
    b = curl(outpost.url("/auth"), headers={"Authorization": "Bearer bob"}, http=proto)
    assert a.body == b"/auth v1"
    assert b.body == b"/auth v2", "bob got alice's response from the cache"
    assert origin.count("/auth") == 2


def test_authorization_shared_when_public_or_s_maxage(outpost, origin, proto):
    for path, cc in (("/authpub", "public, max-age=60"), ("/authsm", "s-maxage=60")):
        _counter_body(origin, path, {"Cache-Control": cc})
        curl(outpost.url(path), headers={"Authorization": "Bearer alice"}, http=proto)
        b = curl(outpost.url(path), headers={"Authorization": "Bearer bob"}, http=proto)
        assert b.xcache == "HIT", "%s (%s) not shared" % (path, cc)
        assert origin.count(path) == 1


def test_cache_key_includes_host(outpost, origin, proto):
    _counter_body(origin, "/host", CC60)
    a = curl(outpost.url("/host"), headers={"Host": "a.example"}, http=proto)
    b = curl(outpost.url("/host"), headers={"Host": "b.example"}, http=proto)
    assert (a.body, b.body) == (b"/host v1", b"/host v2")
    a2 = curl(outpost.url("/host"), headers={"Host": "a.example"}, http=proto)
    assert a2.xcache == "HIT" and a2.body == b"/host v1"
    # lower-cased, the scheme's default port removed (README: cache key)
    default_port = ":443" if proto.startswith("tls") else ":80"
    a3 = curl(outpost.url("/host"), headers={"Host": "A.EXAMPLE" + default_port}, http=proto)
    assert a3.xcache == "HIT" and a3.body == b"/host v1"
    assert origin.count("/host") == 2
    assert [r.header("host") for r in origin.requests("/host")][:2] == ["a.example",
                                                                         "b.example"]


def test_cache_key_includes_query(outpost, origin, proto):
    _counter_body(origin, "/q", CC60)
    r1 = curl(outpost.url("/q?a=1"), http=proto)
    r2 = curl(outpost.url("/q?a=2"), http=proto)
    r3 = curl(outpost.url("/q?a=1"), http=proto)
    r4 = curl(outpost.url("/q"), http=proto)
    assert (r1.body, r2.body, r3.body) == (b"/q v1", b"/q v2", b"/q v1")
    assert r3.xcache == "HIT" and r4.xcache == "MISS"
    assert [r.target for r in origin.requests("/q")] == ["/q?a=1", "/q?a=2", "/q"]


def test_head_served_from_cached_get(outpost, origin, proto):
    origin.route("/hg", headers=CC60, body=b"x" * 777)
    curl(outpost.url("/hg"), http=proto)
    h = curl(outpost.url("/hg"), method="HEAD", http=proto)
    assert h.status == 200 and h.xcache == "HIT"
    assert h.h("content-length") == "777" and h.body == b""
    assert origin.count("/hg") == 1


def test_error_status_passes_through(outpost, origin, proto):
    origin.route("/err", status=503, headers={"Retry-After": "5"}, body=b"down")
    r = curl(outpost.url("/err"), http=proto)
    assert r.status == 503 and r.body == b"down" and r.h("retry-after") == "5"


def test_hide_headers_keeps_origin_details_from_clients(spawn_outpost, origin, proto):
    """hide_headers: origin headers such as Server and X-Powered-By never reach clients, on a
    miss or a hit; the rest passes; per site, overriding the global list."""
    node = spawn_outpost(origin, config="hide_headers \"Server, x-powered-by\"\n"
                                        "site private.test {\n origin %s\n hide_headers X-Backend\n}\n"
                                        "site * {\n origin %s\n}\n" % (origin.addr, origin.addr))
    origin.route("/hide", body=b"x", headers={"Cache-Control": "max-age=60",
                                              "X-Powered-By": "PHP/8", "X-Backend": "10.0.0.7",
                                              "X-Kept": "yes"})
    for expect in ("MISS", "HIT"):
        r = curl(node.url("/hide"), http=proto)
        assert r.status == 200 and r.xcache == expect
        assert r.h("server") is None and r.h("x-powered-by") is None, r.headers
        assert r.h("x-backend") == "10.0.0.7" and r.h("x-kept") == "yes"
    r = curl(node.url("/hide"), http=proto, headers={"Host": "private.test"})
    assert r.h("x-backend") is None, "the site's own list"
    assert r.h("x-powered-by") == "PHP/8", "the site's list replaces the global one"


def test_request_that_passed_through_this_node_is_refused(spawn_outpost, origin, proto):
    """Loop protection: a request whose Via already names this node (an edge and a shield that
    point at each other) gets 508 instead of going round; other nodes' names pass."""
    node = spawn_outpost(origin, extra_args=["--set", "node_name=edge-a"])
    origin.route("/loop", body=b"ok", headers={"Cache-Control": "max-age=60"})
    r = curl(node.url("/loop"), http=proto,
             headers={"Via": "1.1 shield-1 (outpost), 1.1 edge-a (outpost)"})
    assert r.status == 508 and origin.count("/loop") == 0
    for via in ("1.1 edge-ab (outpost)", "1.1 xedge-a (outpost)", "2 edge-a (varnish)"):
        r = curl(node.url("/loop"), http=proto, headers={"Via": via})
        assert r.status == 200, via
    assert node.metric("outpost_http_rejected_total", {"reason": "loop"}) >= 1
    # what the node sends upstream names it, so the next hop can tell
    assert "1.1 edge-a (outpost)" in origin.last("/loop").header("via")
