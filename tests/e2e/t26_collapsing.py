"""t26: request collapsing. Concurrent misses for one object make one origin fetch and every
waiting client streams it as it arrives; responses that turn out uncacheable are not shared and
do not serialise later requests."""

import threading

import pytest

from harness import RawConn, curl, gated_body, get_req, pattern_bytes, wait_for

N = 20
ROUNDS = 20  # complete miss, then the same request: the race below is rare


def _run_clients(outpost, path, n, proto, headers=None):
    results = [None] * n
    errors = []

    def one(i):
        try:
            results[i] = curl(outpost.url(path), headers=headers, http=proto, timeout=60)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def _join(threads, errors):
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "clients still running after 90 s"
    assert not errors, errors


def _collapse(node, origin, path, proto):
    """N clients miss `path` together while the origin holds its answer: one origin fetch,
    every client the full body. Returns the X-Cache values."""
    body = pattern_bytes("collapse" + path, 300000)
    gate = threading.Event()
    origin.route(path, headers={"Cache-Control": "max-age=60"}, body=body, gate=gate)
    threads, results, errors = _run_clients(node, path, N, proto)
    try:
        origin.wait_count(path, 1)
        wait_for(lambda: node.metric("outpost_connections") >= N, 10,
                 msg="%d client connections open at the edge" % N)
    finally:
        gate.set()
    _join(threads, errors)
    assert origin.count(path) == 1
    assert all(r.status == 200 and r.body == body for r in results)
    return sorted(r.xcache for r in results)


def test_concurrent_misses_one_origin_fetch(outpost, origin, proto):
    xc = _collapse(outpost, origin, "/col", proto)
    assert xc.count("MISS") == 1, xc
    assert xc.count("COLLAPSED") == N - 1, xc


def test_waiting_client_streams_before_origin_finishes(outpost, origin):
    first = pattern_bytes("first", 50000)
    rest = pattern_bytes("rest", 200000)
    gate = threading.Event()
    origin.route("/stream", body=lambda req: (200, {"Cache-Control": "max-age=60"},
                                              gated_body(first, gate, rest)))
    a = RawConn(outpost)
    b = RawConn(outpost)
    try:
        a.send(get_req("/stream"))
        data_a = a.read_until(b"\r\n\r\n", timeout=10)
        # a has the head; now b joins the fetch that is still in progress
        b.send(get_req("/stream"))
        head_end = data_a.index(b"\r\n\r\n") + 4
        a.read_at_least(head_end + len(first), timeout=10)
        data_b = b.read_until(b"\r\n\r\n", timeout=10)
        hb = data_b[:data_b.index(b"\r\n\r\n")].decode().lower()
        assert "x-cache: collapsed" in hb, hb
        b.read_at_least(data_b.index(b"\r\n\r\n") + 4 + 1000, timeout=10)
        assert not gate.is_set()
        assert origin.count("/stream") == 1
        got_a = len(a.buf) - head_end
        assert got_a >= len(first), "client a got %d bytes before the gate" % got_a
        assert len(b.buf) > data_b.index(b"\r\n\r\n") + 4, \
            "the collapsed client got no body bytes while the origin was still sending"
        gate.set()
        ra = a.read_response(timeout=30)
        rb = b.read_response(timeout=30)
    finally:
        gate.set()
        a.close()
        b.close()
    assert ra.body == first + rest and rb.body == first + rest
    assert origin.count("/stream") == 1


def test_uncacheable_first_wave_not_shared(outpost, origin, proto):
    n = 8
    gate = threading.Event()

    def h(req):
        return 200, {"Cache-Control": "no-store"}, ("u%d" % req.seq).encode()
    origin.route("/nsc", body=h, gate=gate)
    threads, results, errors = _run_clients(outpost, "/nsc", n, proto)
    try:
        origin.wait_count("/nsc", 1)
        wait_for(lambda: outpost.metric("outpost_connections") >= n, 10)
    finally:
        gate.set()
    _join(threads, errors)
    assert all(r.status == 200 for r in results)
    assert origin.count("/nsc") == n, "a no-store response was shared between clients"
    assert len({r.body for r in results}) == n


def test_uncacheable_known_not_serialised(outpost, origin, proto):
    n = 10
    gate = threading.Event()
    origin.route("/nsc2", headers={"Cache-Control": "no-store"}, body=b"private")
    assert curl(outpost.url("/nsc2"), http=proto).status == 200  # the edge learns it
    origin.route("/nsc2", headers={"Cache-Control": "no-store"}, body=b"private", gate=gate)
    threads, results, errors = _run_clients(outpost, "/nsc2", n, proto)
    try:
        wait_for(lambda: origin.inflight("/nsc2") == n, 15,
                 msg="all %d requests in flight at the origin at once" % n)
    finally:
        gate.set()
    _join(threads, errors)
    assert all(r.status == 200 and r.body == b"private" for r in results)
    assert origin.count("/nsc2") == n + 1
    assert origin.max_inflight("/nsc2") == n


def test_collapsing_across_workers(spawn_outpost, origin, proto):
    """Clients spread over several worker threads (SO_REUSEPORT) still share one fetch: the
    fetch table is node-wide and readers on other workers are woken across threads."""
    node = spawn_outpost(origin, workers=2)
    xc = _collapse(node, origin, "/across", proto)
    assert xc.count("MISS") == 1, xc
    assert xc.count("COLLAPSED") == N - 1, xc


@pytest.mark.parametrize("workers", [1, 2])
def test_complete_miss_then_request_never_refetches(spawn_outpost, origin, proto, workers):
    """Once a client has the whole response of a cacheable miss, the next identical request is
    served from the cache (or, while the commit is pending, waits for it on the complete fetch),
    never sent to the origin again; with only-if-cached it is never a 504. The fetch leaves the
    table when the writer commits its object: a request whose cache lookup ran just before that
    commit and whose table lookup just after found neither (a window of microseconds, hence the
    rounds). Inline and chunked bodies, since they commit differently."""
    node = spawn_outpost(origin, workers=workers)
    for i in range(ROUNDS):
        path = "/again/%d" % i
        body = pattern_bytes(path, 1024 if i % 2 else 100000)
        origin.route(path, headers={"Cache-Control": "max-age=60"}, body=body)
        first = curl(node.url(path), http=proto)
        only = {"Cache-Control": "only-if-cached"} if i % 3 == 2 else None
        second = curl(node.url(path), http=proto, headers=only)
        assert (first.xcache, second.xcache) == ("MISS", "HIT"), \
            "round %d: %s %s, then %s %s" % (i, first.status, first.xcache, second.status,
                                             second.xcache)
        assert second.status == 200 and second.body == body, "round %d" % i
        assert origin.count(path) == 1, "round %d: the origin was asked again" % i
