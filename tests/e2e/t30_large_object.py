"""t30: large objects stream. A 1 GiB body goes through the edge to curl with the right length
and checksum while the edge's memory stays bounded; a slow client reading a 200 MiB object does
not make the edge buffer it. Memory is sampled from /proc every 0.2 s.

The bound: 256 MiB of anonymous memory (RssAnon: heap, buffers). VmRSS is reported too but
also counts mapped pages of the LMDB file (RssFile), which are page cache the kernel reclaims,
not memory the edge holds."""

import hashlib
import socket
import subprocess
import threading
import time

import pytest

from harness import RawConn, get_req, large_body_digest, large_body_iter

LIMIT_KB = 256 * 1024


class RssSampler:
    def __init__(self, node):
        self.node = node
        self.peak = (0, 0, 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                d = self.node.rss_detail()
            except OSError:
                return
            self.peak = tuple(max(a, b) for a, b in zip(self.peak, d))
            self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(5)

    def report(self):
        return "peak VmRSS %d MiB, RssAnon %d MiB, RssFile %d MiB" % tuple(
            v // 1024 for v in self.peak)


def _big_route(origin, path, size, chunked=False):
    origin.route(path, body=lambda req: (200, {"Cache-Control": "max-age=3600",
                                               "Content-Type": "application/octet-stream"},
                                         large_body_iter(size)),
                 length=None if chunked else size)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_1gib_streams_with_bounded_memory(spawn_outpost, origin, chunked, capsys):
    size = 1 << 30
    node = spawn_outpost(origin)
    _big_route(origin, "/gib", size, chunked)
    expect = large_body_digest(size)
    h = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    with RssSampler(node) as rss:
        p = subprocess.Popen(["curl", "-sS", "--http1.1", "--max-time", "120", "-o", "-",
                              node.url("/gib")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while True:
                b = p.stdout.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
                assert time.monotonic() - t0 < 130, "1 GiB not through in 130 s"
            rc = p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    with capsys.disabled():
        print("\n  1 GiB (%s) in %.1fs, %s" % ("chunked" if chunked else "length",
                                               time.monotonic() - t0, rss.report()))
    assert rc == 0, p.stderr.read().decode(errors="replace")
    assert n == size, "received %d bytes" % n
    assert h.hexdigest() == expect, "1 GiB body corrupted"
    assert rss.peak[1] < LIMIT_KB, "RssAnon peaked at %d MiB (%s)" % (rss.peak[1] // 1024,
                                                                      rss.report())


def test_slow_client_200mib_bounded_memory(spawn_outpost, origin, capsys):
    size = 200 << 20
    node = spawn_outpost(origin)
    _big_route(origin, "/slow200", size)
    with RssSampler(node) as rss:
        c = RawConn(node, timeout=30)
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.send(get_req("/slow200"))
            got = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4.0:  # read ~16 KiB every 20 ms for 4 s
                d = c.sock.recv(16384)
                if not d:
                    break
                got += len(d)
                time.sleep(0.02)
            # the origin has had every chance to push far more than we read
            assert got < size
        finally:
            c.close()
    with capsys.disabled():
        print("\n  slow client read %d KiB in 4 s, %s" % (got // 1024, rss.report()))
    assert rss.peak[1] < LIMIT_KB, "RssAnon peaked at %d MiB (%s)" % (rss.peak[1] // 1024,
                                                                      rss.report())
    assert node.alive()
