"""t25: serving stale (RFC 5861). stale-while-revalidate: inside the window the client gets the
stale copy at once (X-Cache: STALE) while one background revalidation reaches the origin;
stale-if-error: when the origin fails (5xx or down) inside the window the stale copy is served;
beyond the windows the origin's answer (or the edge's 502/504) passes through."""

import threading
import time

from harness import curl, wait_for


def _route(origin, path, cc, etag='"s1"', gate=None):
    def h(req):
        return 200, {"Cache-Control": cc}, ("%s v%d" % (path, origin.count(path))).encode()
    origin.route(path, body=h, etag=etag, gate=gate)


def test_stale_while_revalidate_serves_stale_and_revalidates_in_background(outpost, origin,
                                                                           proto):
    _route(origin, "/swr", "max-age=10, stale-while-revalidate=100")
    curl(outpost.url("/swr"), http=proto)
    outpost.advance_clock(20)
    gate = threading.Event()  # the revalidation is held at the origin until we release it
    _route(origin, "/swr", "max-age=10, stale-while-revalidate=100", gate=gate)
    try:
        r = curl(outpost.url("/swr"), http=proto, timeout=10)
        assert r.status == 200 and r.xcache == "STALE", \
            "X-Cache %s while the origin holds the revalidation" % r.xcache
        assert r.body == b"/swr v1"
        origin.wait_count("/swr", 2, timeout=10)  # the background revalidation
        # more clients inside the window are served stale too, without more origin requests
        r = curl(outpost.url("/swr"), http=proto, timeout=10)
        assert r.xcache == "STALE" and origin.count("/swr") == 2
    finally:
        gate.set()
    req = origin.requests("/swr")[1]
    assert req.header("if-none-match") == '"s1"'
    # once the 304 has been applied the object is fresh again
    wait_for(lambda: curl(outpost.url("/swr"), http=proto).xcache == "HIT", 10,
             msg="HIT after the background revalidation")


def test_stale_while_revalidate_beyond_window(outpost, origin, proto):
    _route(origin, "/swr2", "max-age=10, stale-while-revalidate=30", etag=None)
    curl(outpost.url("/swr2"), http=proto)
    outpost.advance_clock(100)
    r = curl(outpost.url("/swr2"), http=proto)
    assert r.xcache == "MISS" and r.body == b"/swr2 v2"


def test_stale_while_revalidate_default_from_config(spawn_outpost, origin, proto):
    node = spawn_outpost(origin, extra_args=["--set", "stale_while_revalidate=100"])
    _route(origin, "/swr3", "max-age=10")
    curl(node.url("/swr3"), http=proto)
    node.advance_clock(20)
    r = curl(node.url("/swr3"), http=proto)
    assert r.xcache == "STALE" and r.body == b"/swr3 v1"
    origin.wait_count("/swr3", 2)


def test_stale_if_error_on_500(outpost, origin, proto):
    _route(origin, "/sie", "max-age=10, stale-if-error=100", etag=None)
    curl(outpost.url("/sie"), http=proto)
    outpost.advance_clock(20)
    origin.route("/sie", status=500, body=b"broken")
    r = curl(outpost.url("/sie"), http=proto)
    assert origin.count("/sie") == 2
    assert r.status == 200 and r.xcache == "STALE" and r.body == b"/sie v1"


def test_stale_if_error_beyond_window_passes_error(outpost, origin, proto):
    _route(origin, "/sie2", "max-age=10, stale-if-error=30", etag=None)
    curl(outpost.url("/sie2"), http=proto)
    outpost.advance_clock(100)
    origin.route("/sie2", status=500, body=b"broken")
    r = curl(outpost.url("/sie2"), http=proto)
    assert r.status == 500 and r.body == b"broken"


def test_stale_if_error_origin_down(outpost, origin, proto):
    _route(origin, "/down", "max-age=10, stale-if-error=100", etag=None)
    _route(origin, "/down2", "max-age=10, stale-if-error=30", etag=None)
    curl(outpost.url("/down"), http=proto)
    curl(outpost.url("/down2"), http=proto)
    outpost.advance_clock(20)
    origin.shutdown()
    r = curl(outpost.url("/down"), http=proto, timeout=20)
    assert r.status == 200 and r.xcache == "STALE" and r.body == b"/down v1"
    outpost.advance_clock(100)  # now beyond /down2's window
    r = curl(outpost.url("/down2"), http=proto, timeout=20)
    assert r.status in (502, 504), "got %d with the origin down" % r.status
    assert outpost.metric("outpost_upstream_errors_total") >= 2


def test_must_revalidate_forbids_stale_if_error(outpost, origin, proto):
    _route(origin, "/siemr", "max-age=10, must-revalidate, stale-if-error=100", etag=None)
    curl(outpost.url("/siemr"), http=proto)
    outpost.advance_clock(20)
    origin.route("/siemr", status=500, body=b"broken")
    r = curl(outpost.url("/siemr"), http=proto)
    assert r.status != 200 and r.xcache != "STALE"


def test_origin_down_without_stale_copy_is_502(outpost, origin, proto):
    origin.shutdown()
    r = curl(outpost.url("/nothing"), http=proto, timeout=20)
    assert r.status in (502, 504)
    assert outpost.metric("outpost_upstream_errors_total", {"reason": "connect"}) >= 1


def test_request_during_the_fetch_after_stale_if_error_joins_it(outpost, origin):
    """A 5xx (served stale) marks the key hit-for-miss; the next fetch's cacheable head clears
    the mark, and a request arriving while that fetch streams must join it, not fetch again.
    Regression: fetches started under the mark were never put in the table, so the request
    after them went to the origin a second time (seen at an edge behind a shield)."""
    from harness import RawConn, get_req
    _route(origin, "/sj", "max-age=10, stale-if-error=100", etag=None)
    curl(outpost.url("/sj"))
    outpost.advance_clock(20)
    origin.route("/sj", status=500, body=b"broken")
    assert curl(outpost.url("/sj")).xcache == "STALE"
    release = threading.Event()

    def body(req):
        def pieces():
            yield b"first "
            release.wait(10)
            yield b"second"
        return 200, {"Cache-Control": "max-age=60"}, pieces()
    origin.route("/sj", body=body)
    with RawConn(outpost) as a:
        a.send(get_req("/sj", host="127.0.0.1:%d" % outpost.port))  # curl's Host: one key
        a.read_until(b"first")  # the head has been through the edge: the mark is cleared
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("b", curl(outpost.url("/sj"))))
        t.start()
        time.sleep(0.3)  # what must not happen: a second request reaching the origin
        assert origin.count("/sj") == 3
        release.set()
        t.join(15)
    assert out["b"].body == b"first second" and out["b"].xcache == "COLLAPSED"
    assert origin.count("/sj") == 3
