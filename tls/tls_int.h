/*
 * tls/tls_int.h: what the files of tls/ share; no other module includes it.
 */
#ifndef OUTPOST_TLS_INT_H
#define OUTPOST_TLS_INT_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "tls/tls.h"

/* Install `t`'s ticket key callback on a server context and cap the session lifetimes at what
 * the keys can decrypt. `t` must outlive `ctx`. */
void tls_tickets_attach(struct tls_tickets *t, SSL_CTX *ctx);

/* Read a whole (small) file into a new buffer: 0, or -errno / OP_ETOOBIG (over `max`). */
int tls_file_read(const char *path, size_t max, uint8_t **data, size_t *len);

#endif
