"""t60: what an operator observes: the access log line format (README "Access log"), the
/metrics counters moving as requests are served, and the /status fields."""

import calendar
import json
import re
import time

from harness import RawConn, curl, get_req, wait_for

# time client "request line" status bytes cache upstream total_ms first_byte_ms "host"
LOG_RE = re.compile(
    r'^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) '
    r'(?P<client>127\.0\.0\.1:\d+) '
    r'"(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) '
    r'(?P<bytes>\d+) '
    r'(?P<cache>HIT|MISS|COLLAPSED|STALE|REVALIDATED|BYPASS|-) '
    r'(?P<upstream>\S+) '
    r'(?P<total>\d+\.\d{3}) '
    r'(?P<first_byte>-|\d+\.\d{3}) '
    r'"(?P<host>[^"]*)"$')


def _log_lines(node, n):
    return wait_for(lambda: len(node.access_log_lines()) >= n and node.access_log_lines(), 5,
                    msg="%d access log lines" % n)


def test_access_log_format(outpost, origin):
    origin.route("/img/a.png", headers={"Cache-Control": "max-age=60"}, body=b"p" * 1024)
    t_before = time.time()
    r1 = curl(outpost.url("/img/a.png?x=1"), headers={"Host": "example.com"})
    r2 = curl(outpost.url("/img/a.png?x=1"), headers={"Host": "example.com"})
    assert (r1.xcache, r2.xcache) == ("MISS", "HIT")
    lines = _log_lines(outpost, 2)
    assert len(lines) == 2, lines
    m1, m2 = (LOG_RE.match(l) for l in lines)
    assert m1 and m2, "access log lines do not match the README format:\n%s" % "\n".join(lines)
    for m in (m1, m2):
        assert m["request"] == "GET /img/a.png?x=1 HTTP/1.1"
        assert m["status"] == "200" and m["bytes"] == "1024"
        assert m["host"] == "example.com"
        ts = calendar.timegm(time.strptime(m["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert t_before - 2 <= ts <= time.time() + 2, "log time %s is not now in UTC" % m["time"]
    assert m1["cache"] == "MISS" and m2["cache"] == "HIT"
    assert m1["upstream"] == origin.addr
    assert m1["first_byte"] != "-"
    assert float(m1["first_byte"]) <= float(m1["total"]) + 0.001
    assert m2["upstream"] == "-" and m2["first_byte"] == "-"


def test_access_log_rejected_and_bypass(outpost, origin):
    curl(outpost.url("/post"), method="POST", data=b"abc")
    with RawConn(outpost) as c:
        c.send(b"GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        c.wait_closed(5)
    lines = _log_lines(outpost, 1)
    m = LOG_RE.match(lines[0])
    assert m and m["request"] == "POST /post HTTP/1.1" and m["cache"] == "BYPASS", lines[0]
    # a refused request is logged too (status 400); its other fields may be "-"
    wait_for(lambda: any('" 400 ' in l for l in outpost.access_log_lines()), 5,
             msg="a 400 line in the access log")


def test_request_counters_by_cache_status_and_code(outpost, origin):
    origin.route("/nf", status=404, headers={"Cache-Control": "max-age=60"}, body=b"nope")
    m0 = outpost.metrics()

    def d(name, labels):
        from harness import metric_sum
        return outpost.metric(name, labels) - metric_sum(m0, name, labels)

    curl(outpost.url("/cnt"))
    curl(outpost.url("/cnt"))
    curl(outpost.url("/cnt"))
    curl(outpost.url("/nf"))
    curl(outpost.url("/p"), method="POST", data=b"x")
    wait_for(lambda: d("outpost_requests_total", None) == 5, 5, msg="5 requests counted")
    assert d("outpost_requests_total", {"cache": "MISS", "code": "200"}) == 1
    assert d("outpost_requests_total", {"cache": "HIT", "code": "200"}) == 2
    assert d("outpost_requests_total", {"cache": "MISS", "code": "404"}) == 1
    assert d("outpost_requests_total", {"cache": "BYPASS"}) == 1
    assert d("outpost_upstream_requests_total", None) == 3
    m = outpost.metrics()
    hits = sum(v for k, v in m.items() if k.startswith("outpost_requests_total{")
               and 'cache="HIT"' in k)
    misses = sum(v for k, v in m.items() if k.startswith("outpost_requests_total{")
                 and 'cache="MISS"' in k)
    assert abs(m["outpost_cache_hit_ratio"] - hits / (hits + misses)) < 1e-6, \
        "hit ratio %s, counters say %d/%d" % (m["outpost_cache_hit_ratio"], hits, hits + misses)


def test_bytes_and_connection_counters(outpost, origin):
    origin.route("/bytes", headers={"Cache-Control": "max-age=60"}, body=b"b" * 50000)
    m0 = outpost.metrics()
    curl(outpost.url("/bytes"))
    curl(outpost.url("/bytes"))
    wait_for(lambda: outpost.metric("outpost_bytes_sent_total")
             >= m0.get("outpost_bytes_sent_total", 0) + 100000, 5, msg="bytes sent counted")
    m1 = outpost.metrics()
    sent = m1["outpost_bytes_sent_total"] - m0.get("outpost_bytes_sent_total", 0)
    assert 100000 <= sent <= 100000 + 2 * 4096, "bytes sent %d for two 50000-byte bodies" % sent
    assert m1["outpost_bytes_received_total"] > m0.get("outpost_bytes_received_total", 0)
    assert m1["outpost_connections_total"] - m0.get("outpost_connections_total", 0) == 2
    wait_for(lambda: outpost.metric("outpost_connections") == 0, 5,
             msg="outpost_connections back to 0 after the curl clients left")
    base = 0
    conns = [RawConn(outpost) for _ in range(3)]
    try:
        for c in conns:  # each connection is accepted and in use
            c.send(get_req("/bytes"))
            assert c.read_response().status == 200
        wait_for(lambda: outpost.metric("outpost_connections") == base + 3, 5)
        assert outpost.metric("outpost_connections_total") == \
            m1["outpost_connections_total"] + 3
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: outpost.metric("outpost_connections") == base, 5,
             msg="outpost_connections back to %d" % base)


def test_upstream_first_byte_histogram(outpost, origin):
    curl(outpost.url("/fb1"))
    curl(outpost.url("/fb2"))
    m = outpost.metrics()
    assert m.get("outpost_upstream_first_byte_seconds_count", 0) >= 2
    inf = [v for k, v in m.items()
           if k.startswith("outpost_upstream_first_byte_seconds_bucket") and 'le="+Inf"' in k]
    assert inf and inf[0] == m["outpost_upstream_first_byte_seconds_count"]


def test_status_fields(outpost, origin):
    curl(outpost.url("/st1"))
    curl(outpost.url("/st2"))
    outpost.cache_sync()
    r = outpost.admin_get("/status")
    assert r.status == 200
    st = json.loads(r.body)
    for k in ("node", "version", "uptime", "workers", "connections", "sites"):
        assert k in st, "/status has no %r: %s" % (k, st)
    assert st["workers"] == 1
    assert isinstance(st["uptime"], (int, float)) and st["uptime"] >= 0
    cache = st.get("cache")
    if isinstance(cache, dict):
        objects = cache.get("objects")
        size = cache.get("size", cache.get("bytes"))
    else:
        objects = st.get("cache_objects")
        size = st.get("cache_size", st.get("cache_bytes"))
    assert objects == 2, "/status cache objects: %s" % st
    assert isinstance(size, (int, float)) and size > 0, "/status cache size: %s" % st
    m = outpost.metrics()
    assert m["outpost_cache_objects"] == 2


def test_access_log_hit_right_after_miss(outpost, origin):
    # the HIT arrives on the same connection right after the MISS completed: its line must
    # still say it used no upstream, and no time to first byte
    with RawConn(outpost) as c:
        c.send(get_req("/b2b"))
        r1 = c.read_response()
        c.send(get_req("/b2b"))
        r2 = c.read_response()
    assert (r1.xcache, r2.xcache) == ("MISS", "HIT")
    lines = _log_lines(outpost, 2)
    m1, m2 = (LOG_RE.match(l) for l in lines[:2])
    assert m1 and m2, lines
    assert m1["upstream"] == origin.addr
    assert (m2["cache"], m2["upstream"], m2["first_byte"]) == ("HIT", "-", "-"), lines[1]
