"""t23: conditional requests. Clients' own If-None-Match / If-Modified-Since are answered from the
cache; the edge revalidates stale objects with the origin's validators, and a 304 from the
origin refreshes the stored headers (RFC 9111 4.3)."""

from harness import curl, http_date


def _route(origin, path, extra, etag=None, last_modified=None, cc="max-age=60"):
    def h(req):
        hdrs = {"Cache-Control": cc}
        hdrs.update(extra)
        return 200, hdrs, ("%s body" % path).encode()
    return origin.route(path, body=h, etag=etag, last_modified=last_modified)


def test_client_if_none_match_from_cache(outpost, origin, proto):
    _route(origin, "/inm", {}, etag='"v1"')
    curl(outpost.url("/inm"), http=proto)
    r = curl(outpost.url("/inm"), headers={"If-None-Match": '"v1"'}, http=proto)
    assert r.status == 304 and r.body == b""
    assert r.h("etag") == '"v1"'
    assert origin.count("/inm") == 1, "a client's conditional request went to the origin"
    r = curl(outpost.url("/inm"), headers={"If-None-Match": '"x", W/"v1"'}, http=proto)
    assert r.status == 304 and origin.count("/inm") == 1
    r = curl(outpost.url("/inm"), headers={"If-None-Match": '"v2"'}, http=proto)
    assert r.status == 200 and r.body == b"/inm body" and origin.count("/inm") == 1


def test_client_if_modified_since_from_cache(outpost, origin, proto):
    lm = origin.now() - 3600
    _route(origin, "/ims", {}, last_modified=http_date(lm))
    curl(outpost.url("/ims"), http=proto)
    r = curl(outpost.url("/ims"), headers={"If-Modified-Since": http_date(lm)}, http=proto)
    assert r.status == 304 and origin.count("/ims") == 1
    r = curl(outpost.url("/ims"), headers={"If-Modified-Since": http_date(lm - 60)}, http=proto)
    assert r.status == 200 and r.body == b"/ims body" and origin.count("/ims") == 1


def test_if_none_match_wins_over_if_modified_since(outpost, origin, proto):
    lm = origin.now() - 3600
    _route(origin, "/both", {}, etag='"b1"', last_modified=http_date(lm))
    curl(outpost.url("/both"), http=proto)
    r = curl(outpost.url("/both"), headers={"If-None-Match": '"other"',
                                            "If-Modified-Since": http_date(lm)}, http=proto)
    assert r.status == 200  # RFC 9110 13.2.2: IMS is ignored when INM is present


def test_revalidation_with_etag_refreshes_headers(outpost, origin, proto):
    _route(origin, "/rv", {"X-Version": "1"}, etag='"r1"', cc="max-age=10")
    r1 = curl(outpost.url("/rv"), http=proto)
    assert r1.h("x-version") == "1"
    outpost.advance_clock(20)
    _route(origin, "/rv", {"X-Version": "2"}, etag='"r1"', cc="max-age=10")
    r2 = curl(outpost.url("/rv"), http=proto)
    req = origin.last("/rv")
    assert req.header("if-none-match") == '"r1"', "revalidation request: %r" % req.headers
    assert r2.status == 200 and r2.xcache == "REVALIDATED"
    assert r2.body == b"/rv body"
    assert r2.h("x-version") == "2", "stored headers not updated by the 304"
    assert r2.age is not None and r2.age <= 2, "Age %s after a revalidation" % r2.age
    r3 = curl(outpost.url("/rv"), http=proto)
    assert r3.xcache == "HIT" and r3.h("x-version") == "2" and r3.body == b"/rv body"
    assert origin.count("/rv") == 2
    # the 304 renewed freshness: 10 s more from the revalidation
    outpost.advance_clock(5)
    assert curl(outpost.url("/rv"), http=proto).xcache == "HIT"


def test_revalidation_with_last_modified(outpost, origin, proto):
    lm = http_date(origin.now() - 86400)
    _route(origin, "/rvlm", {}, last_modified=lm, cc="max-age=10")
    curl(outpost.url("/rvlm"), http=proto)
    outpost.advance_clock(20)
    r = curl(outpost.url("/rvlm"), http=proto)
    assert origin.last("/rvlm").header("if-modified-since") == lm
    assert r.status == 200 and r.xcache == "REVALIDATED" and r.body == b"/rvlm body"


def test_revalidation_gets_new_content(outpost, origin, proto):
    _route(origin, "/rvnew", {}, etag='"a"', cc="max-age=10")
    curl(outpost.url("/rvnew"), http=proto)
    outpost.advance_clock(20)
    origin.route("/rvnew", headers={"Cache-Control": "max-age=10"}, body=b"new", etag='"b"')
    r = curl(outpost.url("/rvnew"), http=proto)
    assert r.status == 200 and r.body == b"new" and r.h("etag") == '"b"'
    assert r.xcache == "MISS"
    r = curl(outpost.url("/rvnew"), http=proto)
    assert r.xcache == "HIT" and r.body == b"new", (r.xcache, r.body, outpost.access_log_lines())


def test_client_conditional_on_miss_is_handled(outpost, origin, proto):
    # a conditional request for an object the edge does not have: the client still gets a
    # correct answer (304 for its validator), and a later plain GET gets the full body
    _route(origin, "/cmiss", {}, etag='"m1"')
    r = curl(outpost.url("/cmiss"), headers={"If-None-Match": '"m1"'}, http=proto)
    assert r.status == 304
    r = curl(outpost.url("/cmiss"), http=proto)
    assert r.status == 200 and r.body == b"/cmiss body"
