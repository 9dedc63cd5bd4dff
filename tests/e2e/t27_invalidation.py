"""t27: invalidation by unsafe methods (RFC 9111 4.4): a non-error response to POST, PUT, DELETE
(or PATCH) invalidates the target URI and the same-origin Location and Content-Location; an error
response does not; another origin's Location is not touched."""

import pytest

import harness
from harness import curl


def _cached(outpost, origin, path, proto):
    def h(req):
        if req.method == "GET":
            return 200, {"Cache-Control": "max-age=600"}, ("%s v%d" % (path, origin.count(path))
                                                           ).encode()
        return 200, {}, b"done"
    origin.route(path, body=h)
    r1 = curl(outpost.url(path), http=proto)
    r2 = curl(outpost.url(path), http=proto)
    assert r2.xcache == "HIT" and r1.body == r2.body
    return r1.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unsafe_method_invalidates(outpost, origin, proto, method):
    path = "/inv-" + method.lower()
    old = _cached(outpost, origin, path, proto)
    r = curl(outpost.url(path), method=method, data=b"x" if method != "DELETE" else None,
             http=proto)
    assert r.status == 200 and r.body == b"done"
    assert origin.last(path).method == method
    g = curl(outpost.url(path), http=proto)
    assert g.xcache == "MISS", "%s did not invalidate (X-Cache %s)" % (method, g.xcache)
    assert g.body != old


def test_location_and_content_location_invalidated(outpost, origin, proto):
    loc_old = _cached(outpost, origin, "/inv-loc", proto)
    cl_old = _cached(outpost, origin, "/inv-cl", proto)
    other_old = _cached(outpost, origin, "/inv-other", proto)
    origin.route("/form", status=201,
                 headers={"Location": "/inv-loc",
                          "Content-Location": harness.client_url(outpost.url("/inv-cl"), proto)},
                 body=b"created")
    r = curl(outpost.url("/form"), method="POST", data=b"a=1", http=proto)
    assert r.status == 201
    g1 = curl(outpost.url("/inv-loc"), http=proto)
    g2 = curl(outpost.url("/inv-cl"), http=proto)
    g3 = curl(outpost.url("/inv-other"), http=proto)
    assert g1.xcache == "MISS" and g1.body != loc_old, "relative Location not invalidated"
    assert g2.xcache == "MISS" and g2.body != cl_old, "same-origin Content-Location not " \
                                                      "invalidated"
    assert g3.xcache == "HIT" and g3.body == other_old


def test_other_origin_location_not_invalidated(outpost, origin, proto):
    old = _cached(outpost, origin, "/inv-foreign", proto)
    origin.route("/form2", status=201,
                 headers={"Location": "http://elsewhere.example/inv-foreign"}, body=b"c")
    curl(outpost.url("/form2"), method="POST", data=b"a=1", http=proto)
    g = curl(outpost.url("/inv-foreign"), http=proto)
    assert g.xcache == "HIT" and g.body == old


@pytest.mark.parametrize("status", [404, 500])
def test_error_response_does_not_invalidate(outpost, origin, proto, status):
    path = "/inv-err%d" % status

    def h(req):
        if req.method == "GET":
            return 200, {"Cache-Control": "max-age=600"}, b"stored"
        return status, {}, b"nope"
    origin.route(path, body=h)
    curl(outpost.url(path), http=proto)
    r = curl(outpost.url(path), method="POST", data=b"x", http=proto)
    assert r.status == status
    g = curl(outpost.url(path), http=proto)
    assert g.xcache == "HIT" and g.body == b"stored"
    assert origin.count(path) == 2


def test_invalidation_covers_every_variant(outpost, origin, proto):
    def h(req):
        if req.method == "GET":
            return (200, {"Cache-Control": "max-age=600", "Vary": "Accept-Language"},
                    ("%s n%d" % (req.header("accept-language"), origin.count("/inv-var"))
                     ).encode())
        return 200, {}, b"ok"
    origin.route("/inv-var", body=h)
    for lang in ("en", "fr"):
        curl(outpost.url("/inv-var"), headers={"Accept-Language": lang}, http=proto)
        assert curl(outpost.url("/inv-var"), headers={"Accept-Language": lang},
                    http=proto).xcache == "HIT"
    curl(outpost.url("/inv-var"), method="DELETE", http=proto)
    for lang in ("en", "fr"):
        r = curl(outpost.url("/inv-var"), headers={"Accept-Language": lang}, http=proto)
        assert r.xcache == "MISS", "variant %s survived the invalidation" % lang
