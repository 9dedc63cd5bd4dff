"""t21: freshness (RFC 9111 4.2, RFC 9213) and the request directives (RFC 9111 5.2.1), driven
by the node's test clock. Each case checks both sides of the boundary: fresh before (HIT, origin
not contacted), not fresh after (the origin is contacted)."""

import pytest

from harness import curl, http_date


def _route(origin, path, headers, etag=None):
    def h(req):
        return 200, dict(headers), ("%s v%d" % (path, origin.count(path))).encode()
    origin.route(path, body=h, etag=etag)


def _fresh_then_not(outpost, origin, proto, path, fresh_at, stale_at):
    r = curl(outpost.url(path), http=proto)
    assert r.xcache == "MISS"
    outpost.advance_clock(fresh_at)
    r = curl(outpost.url(path), http=proto)
    assert r.xcache == "HIT", "not fresh after %d s (X-Cache %s)" % (fresh_at, r.xcache)
    assert origin.count(path) == 1
    outpost.advance_clock(stale_at - fresh_at)
    r = curl(outpost.url(path), http=proto)
    assert r.xcache != "HIT", "still fresh after %d s" % stale_at
    assert origin.count(path) == 2


def test_max_age(outpost, origin, proto):
    _route(origin, "/ma", {"Cache-Control": "max-age=100"})
    _fresh_then_not(outpost, origin, proto, "/ma", 90, 110)


def test_s_maxage_over_max_age(outpost, origin, proto):
    _route(origin, "/sm1", {"Cache-Control": "max-age=10, s-maxage=300"})
    _fresh_then_not(outpost, origin, proto, "/sm1", 60, 320)


def test_s_maxage_shorter_than_max_age(outpost, origin, proto):
    _route(origin, "/sm2", {"Cache-Control": "max-age=300, s-maxage=10"})
    _fresh_then_not(outpost, origin, proto, "/sm2", 5, 60)


def test_expires(outpost, origin, proto):
    _route(origin, "/exp", {"Expires": http_date(origin.now() + 200)})
    _fresh_then_not(outpost, origin, proto, "/exp", 100, 300)


def test_max_age_over_expires(outpost, origin, proto):
    _route(origin, "/exp2", {"Cache-Control": "max-age=300",
                             "Expires": http_date(origin.now() + 10)})
    _fresh_then_not(outpost, origin, proto, "/exp2", 100, 320)


@pytest.mark.parametrize("value", ["0", "not a date", "-1"])
def test_invalid_expires_is_stale(outpost, origin, proto, value):
    _route(origin, "/badexp", {"Expires": value})
    curl(outpost.url("/badexp"), http=proto)
    r = curl(outpost.url("/badexp"), http=proto)
    assert r.xcache != "HIT" and origin.count("/badexp") == 2


def test_heuristic_from_last_modified(outpost, origin, proto):
    # Last-Modified 10 days ago: 10% is one day (also the default heuristic_max)
    _route(origin, "/lm", {"Last-Modified": http_date(origin.now() - 10 * 86400)})
    _fresh_then_not(outpost, origin, proto, "/lm", 3600, 2 * 86400)


def test_cdn_cache_control_over_cache_control(outpost, origin, proto):
    _route(origin, "/cdn1", {"CDN-Cache-Control": "max-age=600", "Cache-Control": "max-age=10"})
    _fresh_then_not(outpost, origin, proto, "/cdn1", 60, 620)


def test_cdn_cache_control_shorter(outpost, origin, proto):
    _route(origin, "/cdn2", {"CDN-Cache-Control": "max-age=10", "Cache-Control": "max-age=600"})
    _fresh_then_not(outpost, origin, proto, "/cdn2", 5, 60)


def test_cdn_cache_control_no_store(outpost, origin, proto):
    _route(origin, "/cdn3", {"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=600"})
    curl(outpost.url("/cdn3"), http=proto)
    r = curl(outpost.url("/cdn3"), http=proto)
    assert r.xcache != "HIT" and origin.count("/cdn3") == 2


def test_no_freshness_not_stored_by_default(outpost, origin, proto):
    _route(origin, "/nofresh", {})
    curl(outpost.url("/nofresh"), http=proto)
    r = curl(outpost.url("/nofresh"), http=proto)
    assert r.xcache != "HIT" and origin.count("/nofresh") == 2


def test_default_ttl(spawn_outpost, origin, proto):
    node = spawn_outpost(origin, extra_args=["--set", "default_ttl=100"])
    _route(origin, "/dttl", {})
    _fresh_then_not(node, origin, proto, "/dttl", 90, 110)


def test_expired_goes_to_origin_with_validator(outpost, origin, proto):
    _route(origin, "/reval", {"Cache-Control": "max-age=10"}, etag='"e1"')
    curl(outpost.url("/reval"), http=proto)
    outpost.advance_clock(20)
    r = curl(outpost.url("/reval"), http=proto)
    assert r.status == 200 and r.body == b"/reval v1"
    assert r.xcache == "REVALIDATED"
    assert origin.last("/reval").header("if-none-match") == '"e1"'


def test_must_revalidate_prevents_stale(outpost, origin, proto):
    _route(origin, "/mr", {"Cache-Control": "max-age=10, must-revalidate"})
    curl(outpost.url("/mr"), http=proto)
    outpost.advance_clock(20)
    r = curl(outpost.url("/mr"), headers={"Cache-Control": "max-stale=1000"}, http=proto)
    assert r.xcache != "STALE" and origin.count("/mr") == 2
    assert r.body == b"/mr v2"


def test_max_stale_allows_stale(outpost, origin, proto):
    _route(origin, "/ms", {"Cache-Control": "max-age=10"})
    curl(outpost.url("/ms"), http=proto)
    outpost.advance_clock(20)
    r = curl(outpost.url("/ms"), headers={"Cache-Control": "max-stale=100"}, http=proto)
    assert r.xcache == "STALE" and r.body == b"/ms v1" and origin.count("/ms") == 1
    # a max-stale too small for this staleness is not enough
    r = curl(outpost.url("/ms"), headers={"Cache-Control": "max-stale=5"}, http=proto)
    assert r.xcache != "STALE" and origin.count("/ms") == 2


@pytest.mark.parametrize("cc", ["max-age=0", "no-cache"])
def test_request_forces_revalidation(outpost, origin, proto, cc):
    _route(origin, "/force", {"Cache-Control": "max-age=600"}, etag='"f1"')
    curl(outpost.url("/force"), http=proto)
    r = curl(outpost.url("/force"), headers={"Cache-Control": cc}, http=proto)
    assert origin.count("/force") == 2, "request %s served without contacting the origin" % cc
    assert r.status == 200 and r.xcache in ("REVALIDATED", "MISS")
    assert r.body == b"/force v1" if r.xcache == "REVALIDATED" else r.body == b"/force v2"


def test_response_no_cache_revalidates_every_time(outpost, origin, proto):
    _route(origin, "/rnc", {"Cache-Control": "no-cache, max-age=600"}, etag='"n1"')
    curl(outpost.url("/rnc"), http=proto)
    r = curl(outpost.url("/rnc"), http=proto)
    assert origin.count("/rnc") == 2 and r.xcache in ("REVALIDATED", "MISS")


def test_request_min_fresh(outpost, origin, proto):
    _route(origin, "/mf", {"Cache-Control": "max-age=60"})
    curl(outpost.url("/mf"), http=proto)
    outpost.advance_clock(30)  # 30 s of freshness left
    r = curl(outpost.url("/mf"), headers={"Cache-Control": "min-fresh=10"}, http=proto)
    assert r.xcache == "HIT" and origin.count("/mf") == 1
    r = curl(outpost.url("/mf"), headers={"Cache-Control": "min-fresh=50"}, http=proto)
    assert r.xcache != "HIT" and origin.count("/mf") == 2


def test_request_max_age(outpost, origin, proto):
    _route(origin, "/rma", {"Cache-Control": "max-age=600"})
    curl(outpost.url("/rma"), http=proto)
    outpost.advance_clock(100)
    r = curl(outpost.url("/rma"), headers={"Cache-Control": "max-age=200"}, http=proto)
    assert r.xcache == "HIT"
    r = curl(outpost.url("/rma"), headers={"Cache-Control": "max-age=50"}, http=proto)
    assert r.xcache != "HIT" and origin.count("/rma") == 2


def test_only_if_cached(outpost, origin, proto):
    r = curl(outpost.url("/oic"), headers={"Cache-Control": "only-if-cached"}, http=proto)
    assert r.status == 504 and origin.count("/oic") == 0
    curl(outpost.url("/oic"), http=proto)
    r = curl(outpost.url("/oic"), headers={"Cache-Control": "only-if-cached"}, http=proto)
    assert r.status == 200 and r.xcache == "HIT" and origin.count("/oic") == 1
