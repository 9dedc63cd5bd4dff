"""t45: tiered fetch (issue 6) with real processes on loopback: scripted origins, shields
(`outpostd --role shield`, the origin behind them) and edges (`outpostd --shield URL...
--origin FALLBACK`). Cold misses through two edges reach the origin once per object, also when
they overlap; each key has one shield, chosen by rendezvous hashing, and only a dead shield's
keys move; killing a shield under load costs no client a GET; a stale copy covers a dead
origin; weighted round-robin, least connections and hashing distribute as configured; active
and passive health checks take servers out and bring them back; Via stops loops with 508; all
shields down falls back to the origin (or 502 when that is off); Age adds up across tiers.

Every node gets its own node_name (they share a host name here, and Via names nodes). Every
client sends Host: tiers.test, so that the cache key (authority + path) of an object is the
same on both edges, as it is for real clients of one site. Origins see who forwarded a request
in its Via: "1.1 EDGE (outpost), 1.1 SHIELD (outpost shield)"."""

import http.client
import re
import threading
import time

import pytest

from harness import (HOST, Origin, Response, WaitTimeout, curl, free_port, pattern_bytes,
                     split_key, wait_for)

SITE = "tiers.test"
H = {"Host": SITE}
CC60 = {"Cache-Control": "max-age=60"}
NO_STORE = {"Cache-Control": "no-store"}
# Health checks every 200 ms; two failures take a server out, two passes bring it back.
FAST_HEALTH = ["--set", "health_interval=200ms", "--set", "health_fall=2",
               "--set", "health_rise=2"]
VIA_SHIELD = re.compile(r"1\.1 (\S+) \(outpost shield\)")
VIA_EDGE = re.compile(r"1\.1 (\S+) \(outpost\)")


# --------------------------------------------------------------------------------------------
# Topology


@pytest.fixture
def origins():
    """A factory of started scripted origins: origins() on a free port, origins(port) on the
    port of one that was shut down (the origin is back). All are shut down after the test."""
    made = []

    def make(port=0):
        o = Origin().start(port)
        made.append(o)
        return o

    yield make
    for o in made:
        o.shutdown()


def _addr(x):
    return x if isinstance(x, str) else x.addr


def shield(spawn, name, origin_addrs, extra=(), conf_head=""):
    """A shield node in front of the origins (a `site *` with their addresses)."""
    conf = "%ssite * {\n    origin %s\n}\n" % (conf_head, " ".join(_addr(o) for o in origin_addrs))
    return spawn(config=conf, tls=False,
                 extra_args=["--role", "shield", "--set", "node_name=" + name] + list(extra))


def edge(spawn, name, shields, fallback, extra=(), **kw):
    """An edge with --shield for each shield (node or "HOST:PORT") and --origin FALLBACK."""
    args = ["--set", "node_name=" + name]
    for s in shields:
        args += ["--shield", "http://" + _addr(s)]
    args += ["--origin", "http://" + _addr(fallback)] + list(extra)
    return spawn(extra_args=args, **kw)


def edge_conf_no_checks(shields, fallback):
    """An edge config whose shield group has no active health checks: the shields then see
    only the edges' fetches as connections."""
    return ("upstream shields {\n" + "".join("    server %s\n" % _addr(s) for s in shields)
            + "    health_check off\n}\nshields shields\nsite * {\n    origin %s\n}\n"
            % _addr(fallback))


def pool_node(spawn, name, servers, options, role="shield", extra=()):
    """A node whose site uses `origin_pool pool`: servers is a list of (origin, weight)."""
    conf = "upstream pool {\n"
    conf += "".join("    server %s weight=%d\n" % (o.addr, w) for o, w in servers)
    conf += "".join("    %s\n" % o for o in options)
    conf += "}\nsite * {\n    origin_pool pool\n}\n"
    return spawn(config=conf, tls=False,
                 extra_args=["--role", role, "--set", "node_name=" + name] + list(extra))


def count(origins_, path):
    return sum(o.count(path) for o in origins_)


def shields_in(req):
    return VIA_SHIELD.findall(", ".join(req.header_all("via")))


def edges_in(req):
    return VIA_EDGE.findall(", ".join(req.header_all("via")))


def server_info(node, upstream, addr):
    """The /status entry of server `addr` of upstream group `upstream` (KeyError if absent:
    wait_for() retries on it)."""
    for u in node.status().get("upstreams", []):
        if u.get("name") == upstream:
            for s in u.get("servers", []):
                if s.get("address") == addr:
                    return s
    raise KeyError("%s / %s not in /status" % (upstream, addr))


def server_group(node, upstream):
    for u in node.status().get("upstreams", []):
        if u.get("name") == upstream:
            return u
    raise KeyError("%s not in /status" % upstream)


def wait_state(node, upstream, addr, state, timeout=10.0):
    wait_for(lambda: server_info(node, upstream, addr)["state"] == state, timeout,
             msg="%s of %s to be %s at %s" % (addr, upstream, state, node.addr))


def server_metric(node, name, upstream, addr):
    """The value of series `name` of one server, or None when there is none."""
    for k, v in node.metrics().items():
        n, labels = split_key(k)
        if n == name and labels.get("upstream") == upstream and labels.get("server") == addr:
            return v
    return None


# --------------------------------------------------------------------------------------------
# Clients: curl where one request is checked, http.client for the loops (keep-alive, no fork)


def get(node, path, headers=None, timeout=20):
    h = dict(H)
    h.update(headers or {})
    c = http.client.HTTPConnection(HOST, node.port, timeout=timeout)
    try:
        c.request("GET", path, headers=h)
        r = c.getresponse()
        body = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        return Response(r.status, hdrs, body)
    finally:
        c.close()


class Client:
    """One keep-alive HTTP/1.1 connection to a node, opened again after an error."""

    def __init__(self, node, timeout=10):
        self.port = node.port
        self.timeout = timeout
        self.c = None

    def get(self, path):
        if self.c is None:
            self.c = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            self.c.request("GET", path, headers=H)
            r = self.c.getresponse()
            body = r.read()
            xc = r.getheader("X-Cache")
            if r.will_close:
                self.close()
            return r.status, xc, body
        except Exception:
            self.close()
            raise

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def curl_clients(node, path, n):
    """n curl clients of `path` at once; returns (threads, results, errors)."""
    results = [None] * n
    errors = []

    def one(i):
        try:
            results[i] = curl(node.url(path), headers=H, timeout=60)
        except Exception as e:  # reported by join_all
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def join_all(threads, errors, timeout=90):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after %d s" % timeout
    assert not errors, errors


# --------------------------------------------------------------------------------------------
# a. cold misses: once per object at the origin


def test_cold_misses_reach_origin_once_per_object(spawn_outpost, origins, proto):
    oa, ob = origins(), origins()
    s1 = shield(spawn_outpost, "t45-s1", [oa, ob])
    s2 = shield(spawn_outpost, "t45-s2", [oa, ob])
    e1 = edge(spawn_outpost, "t45-e1", [s1, s2], oa)
    e2 = edge(spawn_outpost, "t45-e2", [s1, s2], oa)
    paths = ["/cold/%d" % i for i in range(16)]
    for p in paths:
        for o in (oa, ob):
            o.route(p, headers=CC60, body=pattern_bytes(p, 3000))
    for p in paths:
        body = pattern_bytes(p, 3000)
        r = curl(e1.url(p), headers=H, http=proto)
        assert (r.status, r.xcache, r.body == body) == (200, "MISS", True), (p, r.status, r.xcache)
        r = curl(e2.url(p), headers=H, http=proto)
        # e2's own cache is cold: its X-Cache is its own result, whatever the shield had
        assert (r.status, r.xcache, r.body == body) == (200, "MISS", True), (p, r.status, r.xcache)
        assert count((oa, ob), p) == 1, "%s: the origins got %d requests" % (p, count((oa, ob), p))
        for origin_addr in (oa.addr, ob.addr):  # origin hiding
            assert all(origin_addr not in v for vs in r.headers.values() for v in vs), r.headers
    for p in paths:
        for e in (e1, e2):
            r = curl(e.url(p), headers=H, http=proto)
            assert r.status == 200 and r.xcache == "HIT", (p, e.addr, r.xcache)
        assert count((oa, ob), p) == 1
    used_shields, used_edges = set(), set()
    for o in (oa, ob):
        for req in o.requests():
            assert len(shields_in(req)) == 1, "not through exactly one shield: %s" % (
                req.header_all("via"),)
            used_shields.update(shields_in(req))
            used_edges.update(edges_in(req))
    # 16 keys hashed over 2 shields: both get some (fails with probability 2^-15); the first
    # edge to miss each object is e1
    assert used_shields == {"t45-s1", "t45-s2"}, used_shields
    assert used_edges == {"t45-e1"}, used_edges
    assert oa.count() > 0 and ob.count() > 0, "the shields' round-robin used one origin only"


def test_concurrent_cold_misses_two_edges_one_origin_fetch(spawn_outpost, origins):
    """2 edges x N clients miss one object while the origin holds its answer: each edge makes
    one fetch (its clients collapse), both go to the same shield (same key), which makes one
    origin fetch."""
    n = 8
    oa, ob = origins(), origins()
    shields = [shield(spawn_outpost, "t45-s%d" % i, [oa, ob]) for i in (1, 2)]
    edges = [spawn_outpost(config=edge_conf_no_checks(shields, oa),
                           extra_args=["--set", "node_name=t45-e%d" % i]) for i in (1, 2)]
    path = "/overlap"
    body = pattern_bytes(path, 200000)
    gate = threading.Event()
    for o in (oa, ob):
        o.route(path, headers=CC60, body=body, gate=gate)
    runs = []
    try:
        for e in edges:
            runs.append(curl_clients(e, path, n))
        wait_for(lambda: count((oa, ob), path) >= 1, 20, msg="the origin to get the fetch")
        for e in edges:
            wait_for(lambda: e.metric("outpost_connections") >= n, 20,
                     msg="%d clients connected to edge %s" % (n, e.addr))
        # both edges' fetches are at the shields (no health checks: these are the only
        # connections the shields have)
        wait_for(lambda: sum(s.metric("outpost_connections") for s in shields) >= 2, 20,
                 msg="both edges connected to a shield")
        assert count((oa, ob), path) == 1
    finally:
        gate.set()
    for threads, _, errors in runs:
        join_all(threads, errors)
    assert count((oa, ob), path) == 1, "the origins got %d requests" % count((oa, ob), path)
    for e, (_, results, _) in zip(edges, runs):
        assert all(r.status == 200 and r.body == body for r in results), e.addr
        xc = sorted(r.xcache for r in results)
        assert xc.count("MISS") == 1 and xc.count("COLLAPSED") == n - 1, (e.addr, xc)
    # one request per edge reached the shields, and only one shield was asked
    per_shield = []

    def two_at_one_shield():
        per_shield[:] = [s.metric("outpost_requests_total") for s in shields]
        return sorted(per_shield) == [0, 2]
    try:
        wait_for(two_at_one_shield, 5)
    except WaitTimeout:
        raise AssertionError("requests at the shields: %s, expected one per edge at one shield"
                             % per_shield)


# --------------------------------------------------------------------------------------------
# b, c. shield choice: rendezvous hashing; a dead shield's keys move, no others; no client error


def _via_recorder(origins_, paths):
    """Route `paths` on every origin as uncacheable; returns {path: [shield names of the last
    request]}, kept up to date as requests arrive."""
    seen = {}

    def h(req):
        seen[req.path] = shields_in(req)
        return 200, NO_STORE, req.path.encode()
    for o in origins_:
        for p in paths:
            o.route(p, body=h)
    return seen


def _learn(node, paths, seen):
    cl = Client(node)
    where = {}
    try:
        for p in paths:
            st, _, body = cl.get(p)
            assert st == 200 and body == p.encode(), (node.addr, p, st, body[:100])
            names = seen.get(p)
            assert names and len(names) == 1, "%s went through shields %s" % (p, names)
            where[p] = names[0]
    finally:
        cl.close()
    return where


def test_dead_shield_moves_only_its_keys(spawn_outpost, origins):
    oa, ob = origins(), origins()
    shields = [shield(spawn_outpost, "t45-s%d" % i, [oa, ob]) for i in (1, 2, 3)]
    edges = [edge(spawn_outpost, "t45-e%d" % i, shields, oa, extra=FAST_HEALTH, tls=False)
             for i in (1, 2)]
    keys = ["/k/%d" % i for i in range(99)]
    seen = _via_recorder((oa, ob), keys)
    for e in edges:
        for s in shields:
            wait_state(e, "--shield", s.addr, "healthy")
    before = _learn(edges[0], keys, seen)
    assert _learn(edges[1], keys, seen) == before, "the two edges chose different shields"
    share = {s: sum(1 for v in before.values() if v == s) for s in ("t45-s1", "t45-s2", "t45-s3")}
    # one third each, loosely (binomial(99, 1/3): 33 +- 4.7)
    assert all(15 <= c <= 55 for c in share.values()), share

    victim = shields[1]
    victim.kill9()
    for e in edges:
        wait_state(e, "--shield", victim.addr, "unhealthy")
    after = _learn(edges[0], keys, seen)
    assert _learn(edges[1], keys, seen) == after, "the two edges chose different shields"
    moved = sorted(k for k in keys if after[k] != before[k])
    victims_keys = sorted(k for k in keys if before[k] == "t45-s2")
    assert "t45-s2" not in after.values()
    assert moved == victims_keys, "keys of surviving shields moved: %s" % sorted(
        set(moved) - set(victims_keys))
    assert 15 <= len(moved) <= 55, "%d of 99 keys moved" % len(moved)


def test_shield_killed_under_load_no_client_error(spawn_outpost, origins):
    oa, ob = origins(), origins()
    shields = [shield(spawn_outpost, "t45-s%d" % i, [oa, ob]) for i in (1, 2)]
    edges = [edge(spawn_outpost, "t45-e%d" % i, shields, oa, extra=FAST_HEALTH, tls=False)
             for i in (1, 2)]
    paths = ["/load/%d" % i for i in range(24)]
    seen = _via_recorder((oa, ob), paths)
    stop = threading.Event()
    done = [0] * 4
    errors = []

    def load(tid):
        cl = Client(edges[tid % 2])
        try:
            n = 0
            while not stop.is_set() and n < 3000:
                p = paths[(n * 5 + tid) % len(paths)]
                n += 1
                try:
                    st, _, body = cl.get(p)
                except Exception as e:
                    errors.append("%s: %r" % (p, e))
                    continue
                if st != 200 or body != p.encode():
                    errors.append("%s: %d %r" % (p, st, body[:100]))
                done[tid] += 1
        finally:
            cl.close()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(done) >= 100 or errors, 30, msg="100 requests before the kill")
        wait_for(lambda: {tuple(v) for v in seen.values()} >= {("t45-s1",), ("t45-s2",)}, 10,
                 msg="both shields carrying the load")
        shields[0].kill9()
        at = sum(done)
        wait_for(lambda: sum(done) >= at + 300 or errors, 30,
                 msg="300 more requests after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, "%d client errors, first: %s" % (len(errors), errors[:5])
    assert sum(done) >= at + 300
    # after the kill, the keys of the dead shield go through the other one
    for e in edges:
        wait_state(e, "--shield", shields[0].addr, "unhealthy")
    after = _learn(edges[0], paths, seen)
    assert set(after.values()) == {"t45-s2"}, after


# --------------------------------------------------------------------------------------------
# d. stale when the origin is down, fresh when it is back


@pytest.mark.parametrize("copy", ["edge", "shield"])
def test_origin_down_stale_served_then_fresh_again(spawn_outpost, origins, copy):
    """copy=edge: the edge allows stale_if_error by config, the shield does not, so the shield
    answers 502 and the edge serves its own stale copy. copy=shield: the object says
    stale-if-error, so the shield serves its stale copy to the edge. Either way the client
    gets the stale copy with X-Cache: STALE, and the fresh object once the origin is back."""
    oa = origins()
    cool = ["--set", "passive_cooldown=200ms"]
    s1 = shield(spawn_outpost, "t45-s1", [oa], extra=cool)
    e1 = edge(spawn_outpost, "t45-e1", [s1], oa, extra=["--set", "stale_if_error=100"] + cool,
              tls=False)
    cc = "max-age=10" if copy == "edge" else "max-age=10, stale-if-error=100"
    oa.route("/sie", headers={"Cache-Control": cc}, body=b"old")
    r = get(e1, "/sie")
    assert (r.status, r.xcache, r.body) == (200, "MISS", b"old")
    for node in (s1, e1):
        node.advance_clock(20)
    oa.clock_offset += 20
    port = oa.port
    oa.shutdown()
    down = get(e1, "/sie", timeout=30)
    assert (down.status, down.body) == (200, b"old"), (down.status, down.body[:200])
    assert down.age is not None and down.age >= 20, down.age
    back = origins(port)
    back.clock_offset = oa.clock_offset
    back.route("/sie", headers={"Cache-Control": cc}, body=b"new")
    wait_for(lambda: get(e1, "/sie").body == b"new", 15, msg="fresh once the origin is back")
    # After a stale copy was served for a 5xx, the request right after the next complete miss
    # waits for that miss's commit (was: a second MISS upstream; t25 has the regression test).
    r = get(e1, "/sie")
    assert (r.status, r.xcache, r.body) == (200, "HIT", b"new"), (r.status, r.xcache)
    # The shield's stale copy (Age 20 with max-age=10) is STALE at the edge too (was: MISS).
    assert down.xcache == "STALE", "stale copy served with the origin down: X-Cache %s, Age %s" % (
        down.xcache, down.age)


# --------------------------------------------------------------------------------------------
# e. balancing, counted at the origins


def test_weighted_round_robin_3_to_1(spawn_outpost, origins):
    oa, ob = origins(), origins()
    s1 = pool_node(spawn_outpost, "t45-s1", [(oa, 3), (ob, 1)], ["balance round_robin"])
    e1 = edge(spawn_outpost, "t45-e1", [s1], oa, tls=False)
    paths = ["/wrr/%d" % i for i in range(200)]
    for o in (oa, ob):
        for p in paths:
            o.route(p, headers=NO_STORE, body=b"w")
    cl = Client(e1)
    try:
        for p in paths:
            st, _, _ = cl.get(p)
            assert st == 200, p
    finally:
        cl.close()
    a, b = oa.count(), ob.count()
    assert a + b == 200, (a, b)
    assert 2.4 <= a / max(b, 1) <= 3.75, "weights 3:1 gave %d:%d" % (a, b)


def test_least_conn_prefers_the_fast_origin(spawn_outpost, origins):
    slow, fast = origins(), origins()
    node = pool_node(spawn_outpost, "t45-s1", [(slow, 1), (fast, 1)], ["balance least_conn"])
    slow.route("/lc", headers=NO_STORE, body=b"slow", delay=0.4)
    fast.route("/lc", headers=NO_STORE, body=b"fast")
    errors = []
    stop_at = time.monotonic() + 3.0

    def run():
        cl = Client(node, timeout=20)
        try:
            for _ in range(200):
                if time.monotonic() > stop_at:
                    break
                st, _, _ = cl.get("/lc")
                if st != 200:
                    errors.append(st)
        except Exception as e:
            errors.append(e)
        finally:
            cl.close()
    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    join_all(threads, errors, 60)
    a, b = slow.count("/lc"), fast.count("/lc")
    assert a + b >= 30, (a, b)
    # round-robin would give the slow origin half; least connections gives it a share near
    # one request per 0.4 s
    assert a / (a + b) < 0.3, "least_conn: slow %d, fast %d" % (a, b)


def test_hash_balance_keeps_each_key_on_one_origin(spawn_outpost, origins):
    oa, ob = origins(), origins()
    node = pool_node(spawn_outpost, "t45-s1", [(oa, 1), (ob, 1)], ["balance hash"])
    paths = ["/h/%d" % i for i in range(16)]
    for o in (oa, ob):
        for p in paths:
            o.route(p, headers=NO_STORE, body=p.encode())
    cl = Client(node)
    try:
        for _ in range(3):
            for p in paths:
                assert cl.get(p)[0] == 200
    finally:
        cl.close()
    for p in paths:
        assert sorted((oa.count(p), ob.count(p))) == [0, 3], (p, oa.count(p), ob.count(p))
    assert oa.count() > 0 and ob.count() > 0, "16 keys on one origin (probability 2^-15)"


# --------------------------------------------------------------------------------------------
# f. health: active checks, passive ejection, /status and /metrics


def test_status_and_metrics_show_roles_and_upstreams(spawn_outpost, origins):
    oa, ob = origins(), origins()
    s1 = shield(spawn_outpost, "t45-s1", [oa, ob])
    s2 = shield(spawn_outpost, "t45-s2", [oa, ob])
    e1 = edge(spawn_outpost, "t45-e1", [s1, s2], oa, tls=False)
    assert get(e1, "/st").status == 200
    st = e1.status()
    assert st["role"] == "edge"
    ups = {u["name"]: u for u in st["upstreams"]}
    g = ups["--shield"]
    assert g["shield"] is True and g["balance"] == "hash"
    assert sorted(s["address"] for s in g["servers"]) == sorted([s1.addr, s2.addr])
    for s in g["servers"]:
        assert s["weight"] == 1 and s["state"] in ("healthy", "probing"), s
        for k in ("requests", "failures", "checks", "checks_failed"):
            assert isinstance(s[k], int), (k, s)
    wait_for(lambda: sum(s["requests"] for s in server_group(e1, "--shield")["servers"]) == 1,
             5, msg="one request recorded for the shield group")
    o = ups["site *"]
    assert o["shield"] is False and [s["address"] for s in o["servers"]] == [oa.addr]
    st = s1.status()
    assert st["role"] == "shield"
    ups = {u["name"]: u for u in st["upstreams"]}
    assert [u for u in ups.values() if u["shield"]] == []
    assert sorted(s["address"] for s in ups["site *"]["servers"]) == sorted([oa.addr, ob.addr])
    assert ups["site *"]["balance"] == "round_robin"
    text = e1.admin_get("/metrics").body.decode()
    for name in ("outpost_upstream_server_up", "outpost_upstream_server_requests_total",
                 "outpost_upstream_server_failures_total", "outpost_upstream_retries_total",
                 "outpost_upstream_retries_refused_total"):
        assert re.search(r"^%s\{" % name, text, re.M), "/metrics has no %s" % name
    for s in (s1, s2):
        assert server_metric(e1, "outpost_upstream_server_up", "--shield", s.addr) == 1


def test_active_health_checks_take_a_dead_origin_out_and_back(spawn_outpost, origins):
    oa, ob = origins(), origins()

    def routes(o, name):
        o.route("/hc", headers=NO_STORE, body=b"ok")
        o.route("/f", headers=NO_STORE, body=name)
    routes(oa, b"a")
    routes(ob, b"b")
    node = pool_node(spawn_outpost, "t45-s1", [(oa, 1), (ob, 1)],
                     ["health_check /hc", "health_interval 200ms", "health_rise 2",
                      "health_fall 2"])
    for o in (oa, ob):
        wait_state(node, "pool", o.addr, "healthy")
        wait_for(lambda: server_info(node, "pool", o.addr)["checks"] >= 2, 10,
                 msg="active checks of %s" % o.addr)
        assert server_metric(node, "outpost_upstream_server_up", "pool", o.addr) == 1
    assert o.count("/hc") >= 2
    port = ob.port
    ob.shutdown()
    wait_state(node, "pool", ob.addr, "unhealthy")
    info = server_info(node, "pool", ob.addr)
    assert info["checks_failed"] >= 2, info
    assert server_metric(node, "outpost_upstream_server_up", "pool", ob.addr) == 0
    assert server_info(node, "pool", oa.addr)["state"] == "healthy"
    bodies = [get(node, "/f") for _ in range(10)]
    assert [(r.status, r.body) for r in bodies] == [(200, b"a")] * 10
    back = origins(port)
    routes(back, b"b")
    wait_state(node, "pool", ob.addr, "healthy")
    assert server_metric(node, "outpost_upstream_server_up", "pool", ob.addr) == 1
    bodies = [get(node, "/f").body for _ in range(10)]
    assert bodies.count(b"b") >= 3, bodies  # round-robin again (slow_start is off)


def test_passive_health_ejects_a_failing_origin(spawn_outpost, origins):
    oa, ob = origins(), origins()
    oa.route("/p", headers=NO_STORE, body=b"a")
    ob.route("/p", status=500, headers=NO_STORE, body=b"broken")
    node = pool_node(spawn_outpost, "t45-s1", [(oa, 1), (ob, 1)],
                     ["passive_failures 3", "passive_window 10s", "passive_cooldown 60s"])
    statuses = [get(node, "/p").status for _ in range(20)]
    # 5xx are not retried (the client sees them) but count: after 3, the server is out
    assert ob.count("/p") == 3, "requests at the failing origin: %d" % ob.count("/p")
    assert statuses.count(500) == 3 and statuses[-10:] == [200] * 10, statuses
    info = server_info(node, "pool", ob.addr)
    assert info["state"] == "unhealthy" and info["failures"] == 3, info


# --------------------------------------------------------------------------------------------
# g. loop protection


def _fast_508(node, path, headers=None):
    """A loop is refused at once with 508; one that went round would end in a timeout or a
    502/504 from the hops, never a 508 (curl's timeout bounds the wait)."""
    r = get(node, path, headers, timeout=15)
    assert r.status == 508, "%s %s: %d %r" % (node.addr, path, r.status, r.body[:200])
    return r


def test_edge_whose_origin_is_itself_answers_508(spawn_outpost):
    loop = free_port()
    e1 = spawn_outpost(tls=False, extra_args=[
        "--set", "node_name=t45-e1", "--listen", "%s:%d" % (HOST, loop),
        "--origin", "http://%s:%d" % (HOST, loop)])
    _fast_508(e1, "/loop")
    # the request went round once: the client's, and the one the node sent itself (which
    # may be refused before it counts as a request), not again and again
    wait_for(lambda: e1.metric("outpost_requests_total") >= 1, 5)
    assert e1.metric("outpost_requests_total") <= 2, e1.metric("outpost_requests_total")


def test_via_entries_that_mean_a_loop_answer_508(spawn_outpost, origins):
    oa = origins()
    s1 = shield(spawn_outpost, "t45-s1", [oa])
    e1 = edge(spawn_outpost, "t45-e1", [s1], oa, tls=False)
    _fast_508(e1, "/v", {"Via": "1.1 t45-e1 (outpost)"})  # its own entry
    _fast_508(e1, "/v", {"Via": "1.1 t45-s9 (outpost shield)"})  # shields never go to edges
    _fast_508(s1, "/v", {"Via": "1.1 t45-e9 (outpost), 1.1 t45-s1 (outpost shield)"})
    assert oa.count("/v") == 0
    # what is not a loop passes: an edge's request at a shield, a foreign proxy at an edge
    assert get(s1, "/ok1", {"Via": "1.1 t45-e9 (outpost)"}).status == 200
    assert get(e1, "/ok2", {"Via": "1.0 corp-proxy"}).status == 200
    assert oa.count("/ok1") == 1 and oa.count("/ok2") == 1


def test_shield_whose_origin_is_an_edge_answers_508(spawn_outpost, origins):
    oa = origins()
    e_inner = edge(spawn_outpost, "t45-e2", [], oa, tls=False)
    s1 = shield(spawn_outpost, "t45-s1", [e_inner])
    e1 = edge(spawn_outpost, "t45-e1", [s1], oa, tls=False)
    _fast_508(s1, "/x")
    _fast_508(e1, "/y")
    # an edge and a shield that are each other's upstream
    loop = free_port()
    s2 = shield(spawn_outpost, "t45-s2", ["%s:%d" % (HOST, loop)])
    e3 = edge(spawn_outpost, "t45-e3", [s2], oa, tls=False,
              extra=["--listen", "%s:%d" % (HOST, loop)])
    _fast_508(e3, "/z")
    assert oa.count() == 0, [r.path for r in oa.requests()]


# --------------------------------------------------------------------------------------------
# h. every shield down


def test_all_shields_down_falls_back_to_the_origin(spawn_outpost, origins):
    oa = origins()
    shields = [shield(spawn_outpost, "t45-s%d" % i, [oa]) for i in (1, 2)]
    e1 = edge(spawn_outpost, "t45-e1", shields, oa, extra=FAST_HEALTH, tls=False)
    e2 = edge(spawn_outpost, "t45-e2", shields, oa, tls=False,
              extra=FAST_HEALTH + ["--set", "shield_fallback_origin=off"])
    assert get(e1, "/fb/0").status == 200
    assert len(shields_in(oa.last("/fb/0"))) == 1
    for s in shields:
        s.kill9()
    # at once (both shields refuse: two retries, then the origin) ...
    r = get(e1, "/fb/1")
    assert r.status == 200 and r.body.startswith(b"/fb/1 #"), (r.status, r.body[:200])
    req = oa.last("/fb/1")
    assert shields_in(req) == [] and edges_in(req) == ["t45-e1"], req.header_all("via")
    # ... and once the checks have taken them out
    for e in (e1, e2):
        for s in shields:
            wait_state(e, "--shield", s.addr, "unhealthy")
    r = get(e1, "/fb/2")
    assert r.status == 200 and shields_in(oa.last("/fb/2")) == []
    r = get(e2, "/fb/3")
    assert r.status == 502, (r.status, r.body[:200])
    assert re.search(rb"(?i)shield|upstream", r.body), "502 body says nothing: %r" % r.body
    assert oa.count("/fb/3") == 0


# --------------------------------------------------------------------------------------------
# i. Age end to end


def test_age_adds_up_across_tiers(spawn_outpost, origins, proto):
    oa = origins()
    s1 = shield(spawn_outpost, "t45-s1", [oa])
    e1 = edge(spawn_outpost, "t45-e1", [s1], oa)
    e2 = edge(spawn_outpost, "t45-e2", [s1], oa)
    oa.route("/age", headers=CC60, body=b"aged")
    r = curl(e1.url("/age"), headers=H, http=proto)
    assert r.status == 200 and r.xcache == "MISS" and (r.age or 0) < 5
    s1.advance_clock(25)  # the shield's copy is now 25 s old
    r = curl(e2.url("/age"), headers=H, http=proto)
    assert r.status == 200 and r.xcache == "MISS", r.xcache
    assert r.age is not None and 25 <= r.age < 35, "Age %s through the shield" % r.age
    r = curl(e2.url("/age"), headers=H, http=proto)
    assert r.xcache == "HIT" and 25 <= r.age < 35, (r.xcache, r.age)
    # at the edge the object is 25 + 40 s old: past max-age=60 although e2 has had it 40 s
    e2.advance_clock(40)
    r = curl(e2.url("/age"), headers=H, http=proto)
    assert r.status == 200 and r.xcache != "HIT", "still fresh at an age of 65 s"
    assert oa.count("/age") == 1  # the shield's copy (25 s) was fresh
