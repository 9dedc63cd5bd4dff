"""t29: eviction under cache_max_size. With a 2 MiB cap and 100 KiB objects, storing 60 objects
keeps the stored bytes under the cap, counts evictions, keeps the newest objects and drops the
oldest; an object that keeps being read survives objects stored after it."""

from harness import curl, pattern_bytes

SIZE = 100 * 1024
CAP = 2 << 20


def _setup(spawn_outpost, origin, n):
    node = spawn_outpost(origin, extra_args=["--set", "cache_max_size=2m"])

    def h(req):
        return 200, {"Cache-Control": "max-age=3600"}, pattern_bytes(req.path, SIZE)
    for i in range(n):
        origin.route("/ev/%d" % i, body=h)
    return node


def test_cache_bytes_stay_under_cap(spawn_outpost, origin, proto):
    node = _setup(spawn_outpost, origin, 60)
    assert node.metric("outpost_cache_max_bytes") == CAP
    for i in range(60):
        r = curl(node.url("/ev/%d" % i), http=proto)
        assert r.status == 200 and len(r.body) == SIZE
        node.cache_sync()
        b = node.metric("outpost_cache_bytes")
        assert b <= CAP, "outpost_cache_bytes %d over the 2 MiB cap after %d objects" % (b, i + 1)
    m = node.metrics()
    assert m.get("outpost_cache_evictions_total", 0) > 0
    assert m["outpost_cache_objects"] < 60
    assert m["outpost_cache_objects"] * SIZE <= CAP
    # the newest objects are there, the oldest are gone
    newest = [curl(node.url("/ev/%d" % i), http=proto) for i in range(55, 60)]
    assert [r.xcache for r in newest] == ["HIT"] * 5
    assert all(r.body == pattern_bytes("/ev/%d" % i, SIZE) for i, r in zip(range(55, 60), newest))
    oldest = [curl(node.url("/ev/%d" % i), http=proto) for i in range(0, 5)]
    assert [r.xcache for r in oldest] == ["MISS"] * 5


def test_recently_used_object_survives(spawn_outpost, origin, proto):
    node = _setup(spawn_outpost, origin, 60)
    curl(node.url("/ev/0"), http=proto)
    curl(node.url("/ev/1"), http=proto)
    for i in range(2, 60):
        curl(node.url("/ev/%d" % i), http=proto)
        r = curl(node.url("/ev/0"), http=proto)  # /ev/0 is used all the time, /ev/1 never
        assert r.xcache == "HIT", "/ev/0, read after every store, was evicted at object %d" % i
        node.cache_sync()
    assert curl(node.url("/ev/1"), http=proto).xcache == "MISS"
    assert origin.count("/ev/0") == 1
