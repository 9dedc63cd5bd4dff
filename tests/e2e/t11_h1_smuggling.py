"""t11: request smuggling and malformed heads, over raw sockets. Each malformed request must be
refused with the documented status (README: 400, 501 unknown transfer coding, 505 version), the
connection must be closed, the origin must see no request at all, and
outpost_http_rejected_total must count it (with the documented reason where one is
unambiguous)."""

import pytest

from harness import RawConn, parse_responses, raw, wait_for

H = b"Host: localhost\r\n"

# (id, bytes, accepted statuses, expected reason label or None when several fit)
CASES = [
    ("cl_and_te", b"POST /s HTTP/1.1\r\n" + H +
     b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}, "smuggling"),
    ("te_and_cl", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}, "smuggling"),
    ("dup_cl_equal", b"POST /s HTTP/1.1\r\n" + H +
     b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", {400}, "smuggling"),
    ("dup_cl_different", b"POST /s HTTP/1.1\r\n" + H +
     b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", {400}, "smuggling"),
    ("cl_plus_sign", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", {400},
     None),
    ("cl_minus_sign", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: -3\r\n\r\nabc", {400},
     None),
    ("cl_comma_list", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", {400},
     None),
    ("cl_hex", b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", {400}, None),
    ("te_xchunked", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}, None),
    ("te_space_before_colon", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", {400}, None),
    ("obs_fold", b"GET /s HTTP/1.1\r\n" + H + b"X-A: one\r\n  two\r\n\r\n", {400}, None),
    ("obs_fold_te", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", {400}, None),
    ("bare_lf", b"GET /s HTTP/1.1\nHost: localhost\n\n", {400}, "syntax"),
    ("bare_lf_in_header", b"GET /s HTTP/1.1\r\n" + H + b"X-A: 1\nX-B: 2\r\n\r\n", {400},
     "syntax"),
    ("bare_cr", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", {400}, "syntax"),
    ("nul_in_value", b"GET /s HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}, "syntax"),
    ("bad_header_name", b"GET /s HTTP/1.1\r\n" + H + b"X(A): 1\r\n\r\n", {400}, "syntax"),
    ("space_in_header_name", b"GET /s HTTP/1.1\r\n" + H + b"X A: 1\r\n\r\n", {400}, "syntax"),
    ("missing_host", b"GET /s HTTP/1.1\r\nX-A: 1\r\n\r\n", {400}, "host"),
    ("two_hosts", b"GET /s HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n", {400}, "host"),
    ("absolute_form_userinfo", b"GET http://user:pw@localhost/s HTTP/1.1\r\n" + H + b"\r\n",
     {400}, None),
    ("te_gzip_chunked", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {501}, "te_unsupported"),
    ("http2_request_line", b"GET /s HTTP/2.0\r\n" + H + b"\r\n", {505}, "version"),
    ("http10_with_te", b"POST /s HTTP/1.0\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}, "smuggling"),
    ("bad_method_token", b"G(T /s HTTP/1.1\r\n" + H + b"\r\n", {400}, None),
    ("bad_chunk_size", b"POST /s HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", {400}, None),
]


@pytest.mark.parametrize("data,statuses,reason", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_request_refused(outpost, origin, data, statuses, reason):
    before_all = outpost.metric("outpost_http_rejected_total")
    before = outpost.metric("outpost_http_rejected_total", {"reason": reason}) if reason else 0
    res = raw(outpost, data, read_timeout=5)
    assert res.data, "no response at all"
    rs = parse_responses(res.data)
    assert rs[0].status in statuses, "got %d, expected %s: %r" % (rs[0].status, statuses,
                                                                 res.data[:300])
    assert len(rs) == 1, "more than one response: %r" % res.data[:500]
    assert res.closed, "connection not closed after %d" % rs[0].status
    assert origin.heads_seen() == [], "origin saw %r" % origin.heads_seen()
    wait_for(lambda: outpost.metric("outpost_http_rejected_total") == before_all + 1, 5,
             msg="outpost_http_rejected_total to count the refusal")
    if reason:
        assert outpost.metric("outpost_http_rejected_total", {"reason": reason}) == before + 1, \
            "not counted with reason=%s" % reason


def test_te_gzip_chunked_never_reaches_origin(outpost, origin):
    res = raw(outpost, b"POST /s HTTP/1.1\r\nHost: localhost\r\n"
                       b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", read_timeout=5)
    assert res.data, "no response at all"
    assert parse_responses(res.data)[0].status == 501 and res.closed
    assert origin.heads_seen() == []


def test_body_containing_a_request_is_not_executed(outpost, origin):
    inner = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    origin.route("/a", body=b"posted")
    with RawConn(outpost) as c:
        c.send(b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(inner)
               + inner)
        r = c.read_response()
        assert r.status == 200 and r.body == b"posted"
        # nothing else comes back on this connection: the body was a body
        assert c.read_at_least(1, timeout=1.0) == b""
    assert origin.count("/smuggled") == 0
    assert origin.last("/a").body == inner


def test_request_after_rejected_cl_te_is_not_executed(outpost, origin):
    data = (b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /smuggled2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    res = raw(outpost, data, read_timeout=5)
    rs = parse_responses(res.data)
    assert [r.status for r in rs] == [400] and res.closed
    assert origin.heads_seen() == []


def test_valid_request_after_chunked_body_on_same_connection(outpost, origin):
    # the control: a correct chunked body followed by a pipelined request is served
    origin.route("/a", body=lambda req: (200, {}, b"len=%d" % len(req.body)))
    with RawConn(outpost) as c:
        c.send(b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.body == b"len=3" and r2.status == 200 and r2.body.startswith(b"/next #")
    assert origin.last("/a").body == b"abc"
