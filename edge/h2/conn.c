/*
 * edge/h2/conn.c: interim HTTP/2 entry point until the nghttp2 front end lands. A connection
 * that opens with the HTTP/2 preface is answered with a GOAWAY frame carrying
 * HTTP_1_1_REQUIRED (RFC 9113 7) and closed, so h2c clients get a clear protocol error rather
 * than a 400. ALPN does not offer h2 while this file is in place.
 */
#include <stdatomic.h>
#include <sys/socket.h>

#include "edge/edge_int.h"

void h2_conn_adopt(struct worker *w, struct sockio *io)
{
    static const unsigned char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    static const unsigned char goaway[17] = {0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd};
    evbuffer_add(io->out, settings, sizeof(settings));
    evbuffer_add(io->out, goaway, sizeof(goaway));
    (void)sockio_flush(io);
    sockio_fini(io);
    atomic_fetch_sub(&w->edge->connections, 1);
    METRIC_ADD(w, connections, -1);
}

size_t h2_conn_close_idle(struct worker *w)
{
    return 0;
}

void h2_conn_close_all(struct worker *w)
{
}

void h2_conn_reap(struct worker *w)
{
}
