/*
 * tls/clienthello.h: find the server name (SNI) in the first bytes a TLS client sends, without
 * decrypting or terminating anything. Used by TLS passthrough (edge/passthrough.c), which
 * routes the raw connection by that name.
 *
 * What is read, byte by byte (RFC 8446 5.1 and 4.1.2, RFC 6066 3):
 *
 *   record     type(1) = 22 handshake | version(2) = 3.0..3.4 | length(2) = 1..16384 | fragment
 *   handshake  msg_type(1) = 1 client_hello | length(3) | body
 *              The body may span several records: fragments are reassembled in order, and
 *              the message (4-byte header included) may be at most TLS_CH_MAX_HANDSHAKE bytes.
 *   body       legacy_version(2), major 3 | random(32) | session_id<0..32> (1-byte length)
 *              | cipher_suites<2..2^16-2> (2-byte length, even) | compression_methods<1..255>
 *              (1-byte length) | [extensions<0..2^16-1> (2-byte length), which must end
 *              exactly where the message ends; TLS 1.2 and older may leave them out]
 *   extension  type(2) | length(2) | data; type 0 server_name at most once:
 *              list length(2) | { name_type(1) | name length(2) | name }...
 *              The first entry of name_type 0 (host_name) is the SNI.
 *
 * Names are lower-cased; a name that is empty, longer than TLS_CH_SNI_MAX bytes or holds a
 * byte outside [A-Za-z0-9.-_] makes the ClientHello invalid (a router must not guess).
 *
 * The function is pure: no allocation, no I/O, no state between calls. Any thread may call it.
 * Callers feed it everything received so far and call again with more bytes when it answers
 * TLS_CH_INCOMPLETE; bytes after the ClientHello (early data, anything) are ignored.
 */
#ifndef OUTPOST_TLS_CLIENTHELLO_H
#define OUTPOST_TLS_CLIENTHELLO_H

#include <stddef.h>
#include <stdint.h>

#define TLS_CH_MAX_HANDSHAKE 16384 /* ClientHello message bytes, header included */
#define TLS_CH_MAX_RECORDS 32 /* records it may be split across */
/* The parser never needs more than this many bytes: once `len` reaches it, the answer is
 * never TLS_CH_INCOMPLETE. A caller may bound its read buffer to it. */
#define TLS_CH_MAX_WIRE (TLS_CH_MAX_HANDSHAKE + 5 * TLS_CH_MAX_RECORDS)
#define TLS_CH_SNI_MAX 255 /* longest host name accepted */

enum tls_ch_result {
    TLS_CH_INVALID = -1, /* not TLS, not a ClientHello, malformed, or over a bound */
    TLS_CH_INCOMPLETE = -2, /* a valid prefix: more bytes are needed */
    TLS_CH_NO_SNI = 0, /* a complete ClientHello without a host_name */
    TLS_CH_SNI = 1, /* a complete ClientHello; the name is in `sni` */
};

/*
 * Parse the ClientHello at the start of `buf` (`len` bytes, the first bytes of the stream).
 * Returns an enum tls_ch_result. On TLS_CH_SNI, `sni` holds the lower-cased name,
 * NUL-terminated; a name that does not fit in `snilen` bytes is refused (TLS_CH_INVALID), so
 * pass at least TLS_CH_SNI_MAX + 1. Otherwise `sni` holds "" (when snilen > 0).
 * Reads no byte outside buf[0..len).
 */
int tls_clienthello_sni(const uint8_t *buf, size_t len, char *sni, size_t snilen);

#endif
