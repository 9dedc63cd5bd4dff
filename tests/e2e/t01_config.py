"""
tests/e2e/t01_config.py: the operator contract of the configuration (README "Running a node",
"Config file syntax" and the generated reference), through the real outpostd binary:

- `outpostd --help-config=markdown` is exactly the README section between the markers
  (STYLE.md rule 23: the README cannot drift from conf/options.h);
- `outpostd -t -c good.conf` exits 0;
- each bad config exits 1 with "FILE:LINE: DIRECTIVE: PROBLEM" on stderr, with and without
  -t, and the node does not start (nothing listens on the port the config names);
- flags override the file; --version prints a version.
"""

import re
import socket
import subprocess

import pytest

import harness
from harness import HOST, REPO, free_port, outpostd_path

START = "<!-- config-reference:start -->\n"
END = "<!-- config-reference:end -->"


def run(args, timeout=20):
    if not outpostd_path().exists():
        pytest.fail("%s does not exist: run `make all` first" % outpostd_path())
    return subprocess.run([str(outpostd_path())] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def listening(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def readme_reference():
    text = (REPO / "README.md").read_text()
    assert START in text and END in text, "README.md lacks the config-reference markers"
    return text.split(START, 1)[1].split(END, 1)[0]


def test_help_config_markdown_is_the_readme_reference():
    r = run(["--help-config=markdown"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == readme_reference(), \
        "README reference is stale: run scripts/gen-config-doc.sh"


def test_help_config_text_lists_every_option():
    md = run(["--help-config=markdown"]).stdout
    names = re.findall(r"^\| `([a-z_]+)` \|", md, re.M)
    assert "listen" in names and "stale_if_error" in names and len(names) >= 30
    r = run(["--help-config"])
    assert r.returncode == 0, r.stderr
    for n in names:
        assert re.search(r"^%s\s" % n, r.stdout, re.M), "--help-config lacks " + n


def test_version():
    r = run(["--version"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+\.\d+", r.stdout + r.stderr), "no version number printed"


def good_config(tmp_path, port):
    return ("# a complete, valid configuration\n"
            "listen %s:%d\n"
            "admin off\n"
            "workers 1\n"
            "cache_dir %s\n"
            "cache_max_size 64m\n"
            "default_ttl 0\n"
            "header_timeout 5s\n"
            "\n"
            "site example.com www.example.com {\n"
            "    origin 127.0.0.1:9 127.0.0.1:10\n"
            "    default_ttl 5m\n"
            "    stale_while_revalidate 30s\n"
            "}\n"
            "\n"
            "site * {\n"
            "    origin 127.0.0.1:9\n"
            "}\n" % (HOST, port, tmp_path / "cache"))


def test_check_good_config(tmp_path):
    port = free_port()
    conf = tmp_path / "good.conf"
    conf.write_text(good_config(tmp_path, port))
    r = run(["-t", "-c", str(conf)])
    assert r.returncode == 0, r.stderr
    r = run(["--check", "-c", str(conf)])
    assert r.returncode == 0, r.stderr
    assert not listening(port), "-t must not start the node"


# (id, config text after the `listen` line, line of the error, text of the problem)
BAD = [
    ("unknown", "listne 1.2.3.4:80\n", 2, "listne: unknown directive (did you mean 'listen'?)"),
    ("missing_arg", "workers\n", 2, "workers: missing argument"),
    ("extra_arg", "workers 1 2\n", 2, "workers: takes one argument, got 2"),
    ("int_bound", "\nworkers 1000\n", 3, "workers: 1000 is above the maximum of 256"),
    ("size_bound", "cache_max_size 10k\n", 2, "cache_max_size: 10k is below the minimum of 1m"),
    ("size_syntax", "max_body_size lots\n", 2, "max_body_size: expected a size"),
    ("size_overflow", "max_body_size 99999999999999999g\n", 2, "is too large"),
    ("duration", "idle_timeout 5 minutes\n", 2, "idle_timeout: takes one argument, got 2"),
    ("duration_unit", "idle_timeout 5w\n", 2, "idle_timeout: expected a duration"),
    ("bool", "cache_sync yes\n", 2, "cache_sync: expected on or off, got 'yes'"),
    ("address", "admin localhost\n", 2, "admin: 'localhost': missing :PORT"),
    ("duplicate", "workers 1\nworkers 2\n", 3, "workers: duplicate directive (already set at "
     "line 2)"),
    ("site_no_origin", "site a.example {\n default_ttl 1m\n}\n", 2,
     "site: no origin in the site block"),
    ("unterminated_block", "site a.example {\n origin 127.0.0.1:9\n", 2,
     "site: block not closed: missing '}'"),
    ("stray_brace", "}\n", 2, "}: unexpected '}': no block is open"),
    ("unterminated_quote", "node_name \"edge\n", 2, "node_name: unterminated quoted string"),
    ("global_in_site", "site a.example {\n origin 127.0.0.1:9\n workers 2\n}\n", 4,
     "workers: not allowed inside a site block"),
    ("origin_outside", "origin 127.0.0.1:9\n", 2, "origin: only allowed inside a site block"),
    ("duplicate_site", "site a.example {\n origin 127.0.0.1:9\n}\nsite A.example {\n"
     " origin 127.0.0.1:9\n}\n", 5, "site: duplicate site name 'A.example' (already used by "
     "the site at line 2)"),
]


@pytest.mark.parametrize("text,line,problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config(tmp_path, text, line, problem):
    port = free_port()
    conf = tmp_path / "bad.conf"
    conf.write_text("listen %s:%d\n" % (HOST, port) + text)
    for check in (["-t"], []):
        args = check + ["-c", str(conf), "--cache-dir", str(tmp_path / "cache"),
                        "--admin", "off"]
        r = run(args)
        assert r.returncode == 1, "%s: status %s\n%s" % (args, r.returncode, r.stderr)
        want = "%s:%d: " % (conf, line)
        assert want in r.stderr, "expected %r in stderr: %r" % (want, r.stderr)
        assert problem in r.stderr, "expected %r in stderr: %r" % (problem, r.stderr)
        assert not listening(port), "a bad config must not start the node"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.conf"
    r = run(["-t", "-c", str(path)])
    assert r.returncode == 1
    assert "%s: cannot open: No such file or directory" % path in r.stderr, r.stderr


def test_no_site(tmp_path):
    port = free_port()
    conf = tmp_path / "nosite.conf"
    conf.write_text("listen %s:%d\n" % (HOST, port))
    r = run(["-c", str(conf), "--admin", "off"])
    assert r.returncode == 1
    assert "%s: no site to serve" % conf in r.stderr, r.stderr
    assert not listening(port)


@pytest.mark.parametrize("args,problem", [
    (["--origin", "ftp://127.0.0.1:9"], "command line: --origin: 'ftp://127.0.0.1:9': "
     "expected http://HOST:PORT or https://HOST:PORT"),
    (["--origin", "http://127.0.0.1:9", "--tls-listen", "127.0.0.1:1"],
     "command line: tls_listen: needs a default certificate"),
    (["--origin", "http://127.0.0.1:9", "--tls-listen", "127.0.0.1:1", "--cert", "/nonexistent.pem",
      "--key", "/nonexistent.key"], "tls_certificate /nonexistent.pem"),
    (["--origin", "http://127.0.0.1:9/path"], "command line: --origin: "),
    (["--origin", "http://127.0.0.1:9", "--workers", "many"],
     "command line: --workers: expected a whole number, got 'many'"),
    (["--origin", "http://127.0.0.1:9", "--set", "max_headers=0"],
     "command line: --set max_headers: 0 is below the minimum of 1"),
    (["--origin", "http://127.0.0.1:9", "--frobnicate"],
     "command line: --frobnicate: unknown flag"),
    (["--listen", "127.0.0.1:1"], "command line: no site to serve"),
], ids=["scheme", "tls_no_cert", "tls_missing_cert", "path", "workers", "set", "unknown_flag",
        "no_origin"])
def test_bad_flags(args, problem):
    port = free_port()
    r = run(["--listen", "%s:%d" % (HOST, port), "--admin", "off"] + args)
    assert r.returncode == 1, r.stderr
    assert problem in r.stderr, r.stderr
    assert not listening(port)


def test_flags_override_file(spawn_outpost, origin, tmp_path):
    """The file says listen on port A and workers 3; the harness passes --listen B and
    --workers 1: the node must serve on B and not on A."""
    file_port = free_port()
    config = ("listen %s:%d\n"
              "workers 3\n"
              "site * {\n"
              "    origin 127.0.0.1:9\n"
              "}\n" % (HOST, file_port))
    node = spawn_outpost(origin, config=config)
    assert not listening(file_port), "--listen must replace the file's listen"
    origin.route("/conf", body=b"from origin", headers={"Cache-Control": "max-age=60"})
    r = harness.curl(node.url("/conf"))
    assert r.status == 200
    assert r.body == b"from origin", "--origin must replace the file's catch-all origin"
