/*
 * edge/h1/h1.h: HTTP/1.1 (RFC 9112) message parsing and the HTTP/1.1 front end.
 *
 * The parsers are pure functions over caller buffers (picohttpparser's shape): no allocation,
 * no I/O, no callbacks. They return the number of bytes consumed, H1_INCOMPLETE (-2) when more
 * bytes are needed, or H1_INVALID (-1) with `err` set to why. Header names and values point
 * into the caller's buffer and stay valid as long as it does.
 *
 * The request parser is deliberately strict, because an edge that is more lenient than the
 * server behind it is a request-smuggling vector: CR LF only (no bare LF or bare CR),
 * no obs-fold, no whitespace between field name and colon, tokens checked, one valid
 * Content-Length (duplicates refused even if equal), Transfer-Encoding + Content-Length
 * refused, Transfer-Encoding other than exactly "chunked" refused, HTTP/1.0 with
 * Transfer-Encoding refused, invalid bytes (NUL, CTLs) in values refused.
 */
#ifndef OUTPOST_EDGE_H1_H
#define OUTPOST_EDGE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "lib/str.h"

#define H1_INVALID (-1)
#define H1_INCOMPLETE (-2)

/* Why a message was refused. The exchange maps these to status codes (400, 414, 431, 501,
 * 505); the parser itself never speaks in status codes. */
enum h1_error {
    H1_ERR_NONE = 0,
    H1_ERR_SYNTAX = 1, /* malformed request line or header (400) */
    H1_ERR_URI_TOO_LONG = 2, /* request-target over the limit (414) */
    H1_ERR_HEADERS_TOO_LARGE = 3, /* head bytes or header count over the limit (431) */
    H1_ERR_VERSION = 4, /* HTTP version other than 1.0/1.1 (505) */
    H1_ERR_TE_UNSUPPORTED = 5, /* other codings before the final chunked (501) */
    H1_ERR_SMUGGLING = 6, /* CL+TE, duplicate/bad CL, TE not ending in one chunked, TE in
                             HTTP/1.0 (400) */
    H1_ERR_HOST = 7, /* missing, duplicate or invalid Host in HTTP/1.1 (400) */
    H1_ERR_METHOD = 8, /* method is not a token (400) */
    H1_ERR_EXPECTATION = 9, /* Expect other than 100-continue (417) */
};

enum h1_body {
    H1_BODY_NONE = 0, /* no body */
    H1_BODY_LENGTH = 1, /* exactly content_length bytes */
    H1_BODY_CHUNKED = 2, /* chunked transfer coding */
    H1_BODY_CLOSE = 3, /* (responses only) read until the connection closes */
};

/* Sensible defaults for struct h1_limits (the config may override them). */
#define H1_DEFAULT_MAX_HEAD_BYTES 16384
#define H1_DEFAULT_MAX_HEADERS 100
#define H1_DEFAULT_MAX_URI 8192
/* At most this many empty lines (CRLF) before a request-line are skipped (RFC 9112 2.2). */
#define H1_MAX_LEADING_CRLF 8

/* Limits are clamped to INT_MAX bytes so that the returned length always fits the int. */
struct h1_limits {
    size_t max_head_bytes; /* request/status line + headers, CRLFs included */
    size_t max_headers; /* at most this many header fields; also the capacity of headers[] */
    size_t max_uri; /* request-target length */
};

enum h1_target_form {
    H1_TARGET_ORIGIN = 0, /* /path?query */
    H1_TARGET_ABSOLUTE = 1, /* http://host/path */
    H1_TARGET_AUTHORITY = 2, /* host:port (CONNECT) */
    H1_TARGET_ASTERISK = 3, /* * (OPTIONS) */
};

struct h1_request {
    struct str method;
    struct str target; /* as received */
    enum h1_target_form target_form;
    struct str authority; /* Host, or the authority of an absolute-form target (which
                             takes precedence, RFC 9112 3.2.2) */
    struct str path; /* path and query: for absolute-form the part after authority,
                        "/" if empty */
    int minor_version; /* 0 or 1 */
    struct http_header *headers; /* caller's array of limits->max_headers entries */
    size_t n_headers;
    enum h1_body body;
    uint64_t content_length; /* when body == H1_BODY_LENGTH */
    bool keep_alive; /* version default adjusted by Connection: close / keep-alive */
    bool expect_continue; /* Expect: 100-continue */
    enum h1_error err; /* set when H1_INVALID is returned */
};

/*
 * Parse a request head from buf[0..len). Returns the head length (including the final CRLF and
 * any skipped leading CRLFs), H1_INCOMPLETE, or H1_INVALID with req->err set. Bytes after the
 * head (a body, a pipelined request) are not looked at.
 *
 * The caller sets req->headers to an array of limits->max_headers entries before the call;
 * every other field is overwritten. Any thread may call it; it only reads buf and limits.
 *
 * Errors: H1_ERR_HEADERS_TOO_LARGE as soon as len exceeds max_head_bytes without a complete
 * head (or the head has more than max_headers fields); H1_ERR_URI_TOO_LONG as soon as the
 * target received so far is longer than max_uri; syntax errors (bare CR or LF, obs-fold, bad
 * bytes) as soon as the offending byte is seen; framing and Host errors once the head is
 * complete. Framing errors take precedence over H1_ERR_HOST, which takes precedence over
 * H1_ERR_EXPECTATION.
 *
 * Semantics: Content-Length 0 gives H1_BODY_LENGTH with content_length 0; Content-Length must
 * fit INT64_MAX. Host must be a reg-name (ALPHA DIGIT - . _ ~), an IPv4 address or an [IPv6]
 * literal with an optional port of 1..5 digits (<= 65535); an empty Host is only accepted with
 * an absolute-form target. An absolute-form target whose authority is followed directly by "?"
 * is refused (there is no path to point at). Expect: 100-continue is ignored in HTTP/1.0
 * (RFC 9110 10.1.1).
 */
int h1_parse_request(const char *buf, size_t len, struct h1_request *req,
                     const struct h1_limits *limits);

struct h1_response {
    int minor_version;
    int status; /* 100..999 */
    struct str reason;
    struct http_header *headers;
    size_t n_headers;
    enum h1_body body;
    uint64_t content_length;
    bool keep_alive;
    enum h1_error err;
};

/*
 * Parse a response head (from an upstream). Same return convention and header syntax rules as
 * h1_parse_request (no obs-fold, CRLF only). The status line is "HTTP/1.x SP 3DIGIT [SP reason]
 * CRLF"; other well-formed versions give H1_ERR_VERSION.
 *
 * Framing (RFC 9112 6.3), in order: CL + TE, differing or invalid Content-Length values, an
 * invalid or empty Transfer-Encoding list, or chunked applied twice -> H1_ERR_SMUGGLING;
 * `head_request`, 1xx, 204, 304 -> H1_BODY_NONE; TE whose final coding is chunked ->
 * H1_BODY_CHUNKED, unless other codings precede it (we cannot forward a transfer-coded body)
 * -> H1_ERR_TE_UNSUPPORTED; TE whose final coding is not chunked -> H1_BODY_CLOSE; several
 * identical valid Content-Length fields -> H1_BODY_LENGTH; otherwise H1_BODY_CLOSE.
 * keep_alive follows the request rules and is false for H1_BODY_CLOSE.
 */
int h1_parse_response(const char *buf, size_t len, struct h1_response *resp,
                      const struct h1_limits *limits, bool head_request);

/* Bounds of the chunked decoder. */
#define H1_CHUNK_MAX_SIZE (UINT64_C(1) << 62) /* largest accepted chunk-size */
#define H1_CHUNK_MAX_DIGITS 16 /* hex digits in a chunk-size */
#define H1_CHUNK_MAX_LINE 4096 /* chunk-size line with extensions and CRLF */
#define H1_CHUNK_DEFAULT_MAX_TRAILER 8192 /* trailer section incl. its final CRLF */

/* Incremental chunked-body decoder (RFC 9112 7.1). Zero-initialise to start (optionally set
 * max_trailer_bytes). All fields are private to the decoder. */
struct h1_chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    size_t line_bytes; /* bytes in the current size line / trailer line */
    size_t trailer_bytes; /* total trailer bytes seen */
    size_t max_trailer_bytes; /* 0 means 8192 */
};

/*
 * Consume chunked framing from buf[0..len). Returns bytes consumed (>= 0) or H1_INVALID.
 * When some of the consumed bytes are body data, *data_off and *data_len give that span (at most
 * one span per call; call again with the rest). *done becomes true once the last chunk and
 * the trailer section have been consumed; bytes after that are not consumed.
 * Chunk extensions are validated and ignored; trailers are validated and discarded.
 *
 * Strict: CRLF only, no whitespace after the size unless an extension follows, at most
 * H1_CHUNK_MAX_DIGITS digits and H1_CHUNK_MAX_SIZE, size lines up to H1_CHUNK_MAX_LINE bytes,
 * exactly CRLF after chunk data. Works with any split of the input, down to one byte per call.
 * Once H1_INVALID has been returned, every later call returns it again.
 */
int h1_chunked_decode(struct h1_chunked *st, const char *buf, size_t len, size_t *data_off,
                      size_t *data_len, bool *done);

#endif
