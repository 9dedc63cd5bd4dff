"""t28: the cache survives restarts. A clean restart keeps every committed object (HIT, origin
not contacted); kill -9 in the middle of heavy writes leaves a cache that opens, passes
mdb_stat, and never serves a wrong body: every object's body is a function of its path, so any
HIT can be checked byte for byte."""

import shutil
import subprocess
import threading

import pytest

from harness import curl, pattern_bytes, wait_for


def _det_route(origin, prefix):
    """Bodies determined by the path: /prefix/<i> -> i % 7 == 0: 1 MiB, else 10-60 KiB."""
    def h(req):
        i = int(req.path.rsplit("/", 1)[1])
        size = (1 << 20) if i % 7 == 0 else 10000 + (i * 7919) % 50000
        return 200, {"Cache-Control": "max-age=3600"}, pattern_bytes(req.path, size)
    return h


def _expected(path):
    i = int(path.rsplit("/", 1)[1])
    size = (1 << 20) if i % 7 == 0 else 10000 + (i * 7919) % 50000
    return pattern_bytes(path, size)


def _install(origin, prefix, n):
    h = _det_route(origin, prefix)
    for i in range(n):
        origin.route("%s/%d" % (prefix, i), body=h)


def test_clean_restart_keeps_objects(spawn_outpost, origin, proto):
    node = spawn_outpost(origin)
    _install(origin, "/keep", 10)
    for i in range(10):
        r = curl(node.url("/keep/%d" % i), http=proto)
        assert r.xcache == "MISS" and r.body == _expected("/keep/%d" % i)
    node.cache_sync()
    node.restart()
    for i in range(10):
        r = curl(node.url("/keep/%d" % i), http=proto)
        assert r.xcache == "HIT", "/keep/%d not kept over a restart" % i
        assert r.body == _expected("/keep/%d" % i)
    assert origin.total() == 10


def test_clean_restart_without_sync(spawn_outpost, origin, proto):
    # SIGTERM flushes the cache writer (README: Signals); no debug sync needed
    node = spawn_outpost(origin)
    _install(origin, "/nosync", 5)
    for i in range(5):
        curl(node.url("/nosync/%d" % i), http=proto)
    node.restart()
    assert [curl(node.url("/nosync/%d" % i), http=proto).xcache for i in range(5)] == ["HIT"] * 5


def _mdb_envs(cache_dir):
    return sorted({p.parent for p in cache_dir.rglob("data.mdb")})


def _mdb_stat_ok(env, timeout=60):
    """mdb_stat -a must read the environment and exit 0. It once hung after printing every
    database (CI, ASan build, after kill -9): on a timeout, say where it was stuck (its kernel
    wait channel and syscall) and what the lock file's reader table holds, then fail."""
    p = subprocess.Popen(["mdb_stat", "-a", str(env)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        where = {}
        for f in ("wchan", "syscall", "stack"):
            try:
                where[f] = open("/proc/%d/%s" % (p.pid, f)).read().strip()
            except OSError as e:
                where[f] = str(e)
        p.kill()
        out, _ = p.communicate()
        readers = subprocess.run(["mdb_stat", "-r", str(env)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=20).stdout
        raise AssertionError("mdb_stat -a %s hung for %ds after kill -9: %r\noutput:\n%s\n"
                             "readers:\n%s" % (env, timeout, where, out, readers))
    assert p.returncode == 0, "mdb_stat %s after kill -9:\n%s" % (env, out)


@pytest.mark.skipif(shutil.which("mdb_stat") is None, reason="mdb_stat (lmdb-utils) missing")
def test_kill9_during_heavy_writes(spawn_outpost, origin, proto):
    node = spawn_outpost(origin)
    _install(origin, "/kw", 150)
    # phase 1: committed before the crash, must all survive
    for i in range(20):
        curl(node.url("/kw/%d" % i), http=proto)
    node.cache_sync()
    # phase 2: many concurrent misses, some of them large, and kill -9 in the middle
    stop = threading.Event()
    todo = list(range(20, 150))
    lock = threading.Lock()

    def worker():
        while not stop.is_set():
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                curl(node.url("/kw/%d" % i), http=proto, timeout=20, check=False)
            except Exception:
                pass

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: origin.total() >= 60, 60, msg="60 origin fetches under load")
        node.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    envs = _mdb_envs(node.cache_dir)
    assert envs, "no LMDB environment (data.mdb) under %s" % node.cache_dir
    for env in envs:
        _mdb_stat_ok(env)
    node.start()
    hits = 0
    for i in range(150):
        path = "/kw/%d" % i
        r = curl(node.url(path), http=proto)
        assert r.status == 200
        assert r.body == _expected(path), "%s (X-Cache %s) has a wrong body after kill -9" % (
            path, r.xcache)
        if i < 20:
            assert r.xcache == "HIT", "%s was committed (cache-sync) but lost" % path
        hits += r.xcache == "HIT"
    # and a second round: everything is stored now and still correct
    node.cache_sync()
    for i in range(0, 150, 7):
        r = curl(node.url("/kw/%d" % i), http=proto)
        assert r.xcache == "HIT" and r.body == _expected("/kw/%d" % i)
    assert node.metric("outpost_cache_write_errors_total") == 0
