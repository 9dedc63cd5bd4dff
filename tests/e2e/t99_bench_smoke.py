"""t99: the benchmark pipeline (bench/run) end to end, in its smoke mode: one peer that needs only
nginx (the ceiling), 1 s per row, no installs. Checks that the Markdown table and the JSON file
were produced with sane numbers. Skips only when nginx or wrk is not installed."""

import json
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(REPO, "bench", "run")


def test_bench_smoke_nginx_ceiling(tmp_path):
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            pytest.skip("bench smoke needs %s installed (apt-get install %s)"
                        % (tool, "nginx-light" if tool == "nginx" else tool))
    out_json = tmp_path / "smoke.json"
    rows = "h1-1k,h1-1m,miss,h2-1k,h3-1k"
    # Another bench run on this machine (a developer's) is not ours to judge: compare before/after.
    before = set(subprocess.run(["pgrep", "-f", "outpost-bench-"], capture_output=True,
                                text=True).stdout.split())
    r = subprocess.run([RUN, "--smoke", "--peer", "nginx-ceiling", "--rows", rows,
                        "--json", str(out_json)],
                       capture_output=True, text=True, timeout=90, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    # the Markdown table on stdout
    assert "### h1-1k" in r.stdout and "### miss" in r.stdout
    assert "| peer | req/s |" in r.stdout
    assert "| nginx-ceiling | " in r.stdout
    # nginx 1.22 of Debian 12 has no HTTP/3 (and h3load may not be built): the h3 row says
    # n/a with the reason rather than failing
    assert "### h3-1k" in r.stdout

    # the JSON file
    data = json.loads(out_json.read_text())
    assert data["meta"]["machine"]["nproc"] >= 1
    for row in ("h1-1k", "h1-1m", "miss"):
        e = data["rows"][row]["nginx-ceiling"]
        assert "summary" in e, (row, e)
        s = e["summary"]
        assert s["rps"]["median"] > 0, (row, s)
        assert s["req_per_cpu_s"]["median"] > 0, (row, s)
        assert s["peak_rss_kib"]["median"] > 0, (row, s)
        assert s["p99_ms"]["median"] >= s["p50_ms"]["median"] > 0, (row, s)
        assert s["errors"]["median"] == 0, (row, s)
    h3 = data["rows"].get("h3-1k", {}).get("nginx-ceiling", {})
    assert "h3-1k" in data["na_rows"] or h3 == {"na": "no HTTP/3 in the Debian 12 build"}, h3
    # 1 MiB objects: the bytes moved must match the request rate
    s = data["rows"]["h1-1m"]["nginx-ceiling"]["summary"]
    assert 0.9 < s["mibps"]["median"] / s["rps"]["median"] < 1.1
    if shutil.which("h2load"):
        assert data["rows"]["h2-1k"]["nginx-ceiling"]["summary"]["rps"]["median"] > 0

    # nothing the bench started is left running
    left = set(subprocess.run(["pgrep", "-f", "outpost-bench-"], capture_output=True,
                              text=True).stdout.split()) - before
    assert not left, "processes left by the bench: %s" % sorted(left)
