/*
 * edge/mux.c: what the multiplexed front ends (edge/h2, edge/h3) do alike with a request
 * stream's exchange: the request body between the library and the exchange, with
 * flow-control credit given back only as the exchange takes bytes, and the two ways a
 * stream's exchange ends (completed, or its client gone).
 */
#include "edge/edge_int.h"
#include "lib/util.h"

void mux_body_init(struct mux_body *b)
{
    b->in = evbuffer_new();
    ASSERT(b->in != NULL);
}

void mux_body_fini(struct mux_body *b)
{
    evbuffer_free(b->in);
    b->in = NULL;
}

void mux_body_add(struct mux_body *b, const struct config *cfg, const uint8_t *data, size_t len)
{
    b->bytes += len;
    if (b->bytes > cfg->max_body_size)
        b->too_large = true;
    if (!b->too_large)
        evbuffer_add(b->in, data, len);
    else
        b->discard += len;
}

bool mux_body_pending(const struct mux_body *b)
{
    return evbuffer_get_length(b->in) > 0 || b->too_large || (b->eof && !b->eof_delivered);
}

/* The body grew past max_body_size: 413 if the head is not sent yet, else cut the response. */
static void body_too_large(struct exchange *x)
{
    METRIC_INC(x->w, rejected[REJECT_BODY_TOO_LARGE]);
    if (!x->head_sent) {
        exchange_on_client_gone(x);
        exchange_respond_error(x, 413, "request body too large");
    } else {
        x->ops->abort(x);
    }
}

size_t mux_body_deliver(struct mux_body *b, struct exchange *x, bool x_active)
{
    size_t n = evbuffer_get_length(b->in);
    size_t credit = b->discard;
    b->discard = 0;
    if (!x_active || !x->req_has_body) {
        /* nobody takes it any more (answered early): let the client's window move */
        evbuffer_drain(b->in, n);
        return credit + n;
    }
    if (b->too_large) {
        if (b->eof_delivered)
            return credit + n;
        evbuffer_drain(b->in, n);
        b->eof_delivered = true;
        body_too_large(x);
        return credit + n;
    }
    if (b->paused || (n == 0 && (!b->eof || b->eof_delivered)))
        return credit;
    bool eof = b->eof;
    if (eof)
        b->eof_delivered = true;
    exchange_on_req_body(x, b->in, eof); /* may finish the exchange */
    evbuffer_drain(b->in, evbuffer_get_length(b->in));
    return credit + n;
}

void mux_exchange_done(struct exchange *x)
{
    x->finished = true;
    exchange_log(x);
    exchange_fini(x);
}

void mux_exchange_gone(struct exchange *x, bool started)
{
    exchange_on_client_gone(x);
    if (started) {
        if (!x->head_sent)
            x->status = 499;
        exchange_log(x);
    }
    exchange_fini(x);
}

/*
 * A GET or HEAD whose head came without the end of the stream and announces no body: most
 * clients end such a stream with the head, some a moment later (an empty DATA frame, a QUIC
 * STREAM frame with only FIN). Starting at once would have to guess whether a body follows,
 * and a request with a body is not served from the cache; so such a request waits for the
 * end of its stream (or its first body byte). Every other request starts with its head.
 */
bool mux_head_ready(const struct exchange *x, const struct mux_body *b, bool end_on_headers)
{
    if (end_on_headers || b->eof || b->bytes > 0)
        return true;
    if (!str_eq(x->method, STR_LIT("GET")) && !str_eq(x->method, STR_LIT("HEAD")))
        return true;
    const struct http_header *cl = http_headers_get(&x->req, "content-length");
    return cl != NULL && !str_eq(cl->value, STR_LIT("0"));
}

bool mux_no_body(const struct mux_body *b, bool end_on_headers)
{
    return end_on_headers || (b->eof && b->bytes == 0);
}
