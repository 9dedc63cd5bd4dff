"""
tests/e2e/conftest.py: pytest wiring of the actor library (harness.py).

Collection: the suite's files are named tNN_*.py (STYLE.md rule 29: the name orders the suite so
the first failure is the most basic), which pytest does not collect by default; the hook below
collects them in name order.

Fixtures
  origin          a started harness.Origin, shut down after the test
  spawn_outpost   factory: spawn_outpost(origin=None, extra_args=(), config=None, **kw) -> Outpost
                  (free ports, tmp cache dir, debug API, access log); stopped after the test, and
                  the test fails if the node crashed or did not stop cleanly on SIGTERM
  outpost         one node in front of `origin` with the default settings
  proto           the protocol a behavioural test runs over (harness.PROTOCOLS)
  certs           a directory of test certificates (scripts/gen-test-certs.sh: a CA, an
                  intermediate, leaves for default.test, a.example, *.wild.example, chain.example,
                  ...), made once per session
On failure, the stderr of every node of the test is attached to the report.
"""

import re
import subprocess

import pytest

import harness

@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(harness.REPO / "scripts" / "gen-test-certs.sh"), str(d)], check=True,
                   stdout=subprocess.DEVNULL)
    return d


_T_FILE = re.compile(r"^t\d\d_.*\.py$")


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself
    if _T_FILE.match(file_path.name) and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def origin():
    o = harness.Origin().start()
    yield o
    o.shutdown()


@pytest.fixture
def spawn_outpost(tmp_path, request):
    nodes = []
    request.node._outpost_nodes = nodes

    def spawn(origin=None, extra_args=(), config=None, **kw):
        d = tmp_path if not nodes else tmp_path / ("node%d" % len(nodes))
        node = harness.Outpost(d, origin, extra_args, config, **kw)
        nodes.append(node)
        return node.start()

    yield spawn
    errors = []
    for n in nodes:
        try:
            n.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def outpost(spawn_outpost, origin):
    return spawn_outpost(origin)


@pytest.fixture(params=harness.PROTOCOLS, ids=lambda p: harness.PROTOCOL_IDS[p])
def proto(request):
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, n in enumerate(getattr(item, "_outpost_nodes", [])):
            rep.sections.append(("outpostd #%d stderr (%s)" % (i, n.stderr_path),
                                 n.stderr_text()))
