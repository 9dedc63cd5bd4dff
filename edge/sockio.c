/*
 * edge/sockio.c: plaintext or TLS byte stream of a client connection (see sockio.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edge/sockio.h"
#include "lib/util.h"

#define IO_RETRIABLE(e) ((e) == EAGAIN || (e) == EWOULDBLOCK || (e) == EINTR)

void sockio_init(struct sockio *io, evutil_socket_t fd, struct tls_server *tls)
{
    memset(io, 0, sizeof(*io));
    evutil_make_socket_nonblocking(fd);
    io->fd = fd;
    io->in = evbuffer_new();
    io->out = evbuffer_new();
    ASSERT(io->in != NULL && io->out != NULL);
    if (tls != NULL) {
        io->is_tls = true;
        io->tls_srv = tls_server_ref(tls);
        tls_conn_init(&io->tls, tls_server_ssl(tls));
    }
}

void sockio_moved(struct sockio *io)
{
    if (io->is_tls)
        tls_conn_moved(&io->tls);
}

void sockio_fini(struct sockio *io)
{
    if (io->in == NULL)
        return;
    if (io->is_tls) {
        tls_conn_fini(&io->tls);
        tls_server_unref(&io->tls_srv);
    }
    evbuffer_free(io->in);
    evbuffer_free(io->out);
    io->in = io->out = NULL;
    if (io->fd >= 0)
        evutil_closesocket(io->fd);
    io->fd = -1;
}

enum sockio_rc sockio_read(struct sockio *io, size_t max)
{
    struct evbuffer *dst = io->is_tls ? io->tls.rin : io->in;
    int n = evbuffer_read(dst, io->fd, (int)max);
    bool eof = false;
    if (n == 0)
        eof = true;
    else if (n < 0 && !IO_RETRIABLE(errno))
        return SOCKIO_ERROR;
    if (!io->is_tls)
        return eof ? SOCKIO_EOF : n < 0 ? SOCKIO_AGAIN : SOCKIO_OK;
    /* Decrypt whatever arrived; the handshake may also produce records to send. */
    enum tls_status st = tls_conn_read(&io->tls, io->in);
    if (st == TLS_ERROR)
        return SOCKIO_ERROR;
    if (st == TLS_EOF)
        return SOCKIO_EOF;
    if (eof)
        return SOCKIO_EOF; /* FIN without close_notify: truncation, but the same to us */
    return n < 0 && st == TLS_WANT ? SOCKIO_AGAIN : SOCKIO_OK;
}

enum sockio_rc sockio_flush(struct sockio *io)
{
    struct evbuffer *wire = io->out;
    if (io->is_tls) {
        if (io->tls.handshake_done && evbuffer_get_length(io->out) > 0 &&
            tls_conn_write_buf(&io->tls, io->out) != TLS_OK)
            return SOCKIO_ERROR;
        wire = io->tls.rout;
    }
    while (evbuffer_get_length(wire) > 0) {
        int n = evbuffer_write(wire, io->fd);
        if (n < 0) {
            if (IO_RETRIABLE(errno))
                return SOCKIO_AGAIN;
            return SOCKIO_ERROR;
        }
        if (n == 0)
            return SOCKIO_AGAIN;
    }
    return sockio_pending(io) > 0 ? SOCKIO_AGAIN : SOCKIO_OK;
}

size_t sockio_pending(const struct sockio *io)
{
    size_t n = evbuffer_get_length(io->out);
    if (io->is_tls)
        n += evbuffer_get_length(io->tls.rout);
    return n;
}

size_t sockio_send_direct(struct sockio *io, const void *data, size_t len, size_t max_copy,
                          bool *dead)
{
    size_t done = 0;
    *dead = false;
    if (sockio_pending(io) > 0 && sockio_flush(io) == SOCKIO_ERROR) {
        *dead = true;
        return 0;
    }
    if (io->is_tls) {
        /* Encrypting is the copy: take what the bound allows, then write the records. */
        size_t pend = sockio_pending(io);
        size_t room = pend >= max_copy ? 0 : max_copy - pend;
        size_t n = len < room ? len : room;
        if (n > 0 && tls_conn_write(&io->tls, data, n) != TLS_OK) {
            *dead = true;
            return 0;
        }
        if (sockio_flush(io) == SOCKIO_ERROR)
            *dead = true;
        return n;
    }
    if (sockio_pending(io) == 0) {
        ssize_t w = send(io->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            done = (size_t)w;
        } else if (w < 0 && !IO_RETRIABLE(errno)) {
            *dead = true;
            return 0;
        }
    }
    if (done < len) {
        size_t pend = sockio_pending(io);
        size_t room = pend >= max_copy ? 0 : max_copy - pend;
        size_t n = len - done < room ? len - done : room;
        evbuffer_add(io->out, (const char *)data + done, n);
        done += n;
        if (sockio_flush(io) == SOCKIO_ERROR)
            *dead = true;
    }
    return done;
}

bool sockio_ready(const struct sockio *io)
{
    return !io->is_tls || io->tls.handshake_done;
}

void sockio_shutdown(struct sockio *io)
{
    if (io->is_tls)
        tls_conn_shutdown(&io->tls);
}
