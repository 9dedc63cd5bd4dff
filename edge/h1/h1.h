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
    H1_ERR_SYNTAX = 1,          /* malformed request line or header (400) */
    H1_ERR_URI_TOO_LONG = 2,    /* request-target over the limit (414) */
    H1_ERR_HEADERS_TOO_LARGE = 3, /* head bytes or header count over the limit (431) */
    H1_ERR_VERSION = 4,         /* HTTP version other than 1.0/1.1 (505) */
    H1_ERR_TE_UNSUPPORTED = 5,  /* transfer coding other than chunked (501) */
    H1_ERR_SMUGGLING = 6,       /* CL+TE, duplicate/bad CL, TE in HTTP/1.0 (400) */
    H1_ERR_HOST = 7,            /* missing, duplicate or invalid Host in HTTP/1.1 (400) */
    H1_ERR_METHOD = 8,          /* method is not a token (400) */
};

enum h1_body {
    H1_BODY_NONE = 0,    /* no body */
    H1_BODY_LENGTH = 1,  /* exactly content_length bytes */
    H1_BODY_CHUNKED = 2, /* chunked transfer coding */
    H1_BODY_CLOSE = 3,   /* (responses only) read until the connection closes */
};

struct h1_limits {
    size_t max_head_bytes; /* request/status line + headers, CRLFs included */
    size_t max_headers;    /* at most this many header fields; also the capacity of headers[] */
    size_t max_uri;        /* request-target length */
};

enum h1_target_form {
    H1_TARGET_ORIGIN = 0,    /* /path?query */
    H1_TARGET_ABSOLUTE = 1,  /* http://host/path */
    H1_TARGET_AUTHORITY = 2, /* host:port (CONNECT) */
    H1_TARGET_ASTERISK = 3,  /* * (OPTIONS) */
};

struct h1_request {
    struct str method;
    struct str target;       /* as received */
    enum h1_target_form target_form;
    struct str authority;    /* Host, or the authority of an absolute-form target (which
                                takes precedence, RFC 9112 3.2.2) */
    struct str path;         /* path and query: for absolute-form the part after authority,
                                "/" if empty */
    int minor_version;       /* 0 or 1 */
    struct http_header *headers; /* caller's array of limits->max_headers entries */
    size_t n_headers;
    enum h1_body body;
    uint64_t content_length; /* when body == H1_BODY_LENGTH */
    bool keep_alive;         /* version default adjusted by Connection: close / keep-alive */
    bool expect_continue;    /* Expect: 100-continue */
    enum h1_error err;       /* set when H1_INVALID is returned */
};

/* Parse a request head from buf[0..len). Returns the head length (including the final CRLF),
 * H1_INCOMPLETE, or H1_INVALID with req->err set. H1_ERR_HEADERS_TOO_LARGE is returned as soon
 * as len exceeds max_head_bytes without a complete head. */
int h1_parse_request(const char *buf, size_t len, struct h1_request *req,
                     const struct h1_limits *limits);

struct h1_response {
    int minor_version;
    int status;              /* 100..999 */
    struct str reason;
    struct http_header *headers;
    size_t n_headers;
    enum h1_body body;
    uint64_t content_length;
    bool keep_alive;
    enum h1_error err;
};

/* Parse a response head (from an upstream). `head_request` and 1xx/204/304 statuses mean no
 * body. More lenient than the request parser only where RFC 9112 allows a client to be
 * (reason phrase contents); CL+TE responses are refused (H1_ERR_SMUGGLING). */
int h1_parse_response(const char *buf, size_t len, struct h1_response *resp,
                      const struct h1_limits *limits, bool head_request);

/* Incremental chunked-body decoder (RFC 9112 7.1). Zero-initialise to start. */
struct h1_chunked {
    int state;
    uint64_t remaining;   /* bytes left in the current chunk */
    size_t line_bytes;    /* bytes in the current size line / trailer line */
    size_t trailer_bytes; /* total trailer bytes seen */
    size_t max_trailer_bytes; /* 0 means 8192 */
};

/*
 * Consume chunked framing from buf[0..len). Returns bytes consumed (>= 0) or H1_INVALID.
 * When some of the consumed bytes are body data, *data_off/*data_len give that span (at most
 * one span per call; call again with the rest). *done becomes true once the last chunk and
 * the trailer section have been consumed; bytes after that are not consumed.
 * Chunk extensions are validated and ignored; trailers are validated and discarded.
 */
int h1_chunked_decode(struct h1_chunked *st, const char *buf, size_t len, size_t *data_off,
                      size_t *data_len, bool *done);

#endif
