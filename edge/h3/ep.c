/*
 * edge/h3/ep.c: the QUIC endpoint of each worker: UDP sockets, steering packets to the worker
 * that owns their connection, the stateless answers (Version Negotiation, Retry, stateless
 * reset) and the connection-ID table.
 *
 * Sockets: every worker binds its own SO_REUSEPORT socket on every h3_listen address, in
 * worker order on the main thread, so socket i of a reuseport group is worker i's. A classic
 * BPF program (cid.h) makes the kernel deliver each datagram to the socket of the worker named
 * in its destination connection ID. If the program cannot be attached, or a packet still lands
 * elsewhere, the receiving worker forwards it to its owner through a locked inbox.
 *
 * Receiving: recvmmsg in batches; each datagram goes to its connection (h3_conn_recv only
 * feeds ngtcp2 and schedules the connection's run, so one run serves a whole batch). Unknown
 * destination IDs: a long-header Initial may start a connection (after a Retry round trip
 * when h3_retry is on, or when more than h3_retry_under_load handshakes are in progress on the
 * worker); a short header gets a stateless reset (RFC 9000 10.3), smaller than what provoked
 * it and rate-limited, so that a client of a node that restarted learns at once that its
 * connection is gone; anything else is dropped and counted.
 *
 * Sending: h3_sock_send() writes a batch of equal-sized packets with one sendmsg and
 * UDP_SEGMENT (GSO) when h3_gso is on and the kernel supports it, else one sendmmsg. A full
 * socket buffer makes the connection wait for EV_WRITE with its batch kept.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "edge/h3/quic_int.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/util.h"

#define RX_BATCH 32
#define RX_SLOT 4096 /* larger than any datagram a client may send us (we advertise 1452) */
#define RX_ROUNDS 8 /* recvmmsg batches per read event before yielding to the loop */
#define SOCK_BUF (4 * 1024 * 1024)
#define RESET_RATE 200.0 /* stateless resets per second per worker (burst: as many) */
#define RETRY_TOKEN_LIFETIME (10 * NGTCP2_SECONDS)
#define INBOX_MAX 4096

static ngtcp2_tstamp now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void fill_random(void *p, size_t len)
{
    uint8_t *b = p;
    while (len > 0) {
        ssize_t n = getrandom(b, len, 0);
        ASSERT(n > 0);
        b += n;
        len -= (size_t)n;
    }
}

/* ---- the node ----------------------------------------------------------------------------- */

static int secret_load(struct h3_node *n, const char *path, char *err, size_t errlen)
{
    if (path == NULL) {
        fill_random(n->secret, sizeof(n->secret));
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "h3_secret_file %s: cannot open: %s", path, strerror(errno));
        return OP_EINVAL;
    }
    size_t got = fread(n->secret, 1, sizeof(n->secret), f);
    fclose(f);
    if (got < sizeof(n->secret)) {
        snprintf(err, errlen, "h3_secret_file %s: needs at least %zu bytes, has %zu", path,
                 sizeof(n->secret), got);
        return OP_EINVAL;
    }
    return 0;
}

int h3_node_new(const struct config *cfg, struct h3_node **out, char *err, size_t errlen)
{
    struct h3_node *n = xcalloc(1, sizeof(*n));
    pthread_mutex_init(&n->lock, NULL);
    int rc = secret_load(n, cfg->h3_secret_file, err, errlen);
    if (rc == 0)
        rc = h3_tls_new(cfg, &n->tls, err, errlen);
    if (rc != 0) {
        h3_node_free(&n);
        return rc;
    }
    *out = n;
    return 0;
}

void h3_node_free(struct h3_node **np)
{
    struct h3_node *n = *np;
    if (n == NULL)
        return;
    h3_tls_unref(&n->tls);
    pthread_mutex_destroy(&n->lock);
    free(n);
    *np = NULL;
}

int h3_node_reload(struct h3_node *n, const struct config *cfg, char *err, size_t errlen)
{
    struct h3_tls *t = NULL;
    int rc = h3_tls_new(cfg, &t, err, errlen);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&n->lock);
    struct h3_tls *old = n->tls;
    n->tls = t;
    pthread_mutex_unlock(&n->lock);
    h3_tls_unref(&old);
    return 0;
}

struct h3_tls *h3_node_tls(struct h3_node *n)
{
    pthread_mutex_lock(&n->lock);
    struct h3_tls *t = h3_tls_ref(n->tls);
    pthread_mutex_unlock(&n->lock);
    return t;
}

/* ---- connection-ID table ------------------------------------------------------------------ */

static size_t cid_slot(const struct h3_worker *hw, const uint8_t *cid, size_t len)
{
    return (size_t)(siphash24(hw->hash_key, cid, len) & (hw->tab_size - 1));
}

static void tab_grow(struct h3_worker *hw)
{
    size_t old_size = hw->tab_size;
    struct h3_cid_entry **old = hw->tab;
    hw->tab_size = old_size * 2;
    hw->tab = xcalloc(hw->tab_size, sizeof(*hw->tab));
    for (size_t i = 0; i < old_size; i++) {
        struct h3_cid_entry *e = old[i];
        while (e) {
            struct h3_cid_entry *next = e->next;
            size_t k = cid_slot(hw, e->cid, e->len);
            e->next = hw->tab[k];
            hw->tab[k] = e;
            e = next;
        }
    }
    free(old);
}

void h3_cid_register(struct h3_worker *hw, const uint8_t *cid, size_t len, struct h3_conn *c)
{
    ASSERT(len <= NGTCP2_MAX_CIDLEN);
    if (h3_cid_lookup(hw, cid, len) != NULL)
        return;
    if (hw->tab_count >= hw->tab_size)
        tab_grow(hw);
    struct h3_cid_entry *e = xcalloc(1, sizeof(*e));
    memcpy(e->cid, cid, len);
    e->len = (uint8_t)len;
    e->c = c;
    size_t k = cid_slot(hw, cid, len);
    e->next = hw->tab[k];
    hw->tab[k] = e;
    hw->tab_count++;
}

void h3_cid_unregister(struct h3_worker *hw, const uint8_t *cid, size_t len)
{
    struct h3_cid_entry **pp = &hw->tab[cid_slot(hw, cid, len)];
    for (; *pp; pp = &(*pp)->next) {
        struct h3_cid_entry *e = *pp;
        if (e->len == len && memcmp(e->cid, cid, len) == 0) {
            *pp = e->next;
            free(e);
            hw->tab_count--;
            return;
        }
    }
}

struct h3_conn *h3_cid_lookup(struct h3_worker *hw, const uint8_t *cid, size_t len)
{
    for (struct h3_cid_entry *e = hw->tab[cid_slot(hw, cid, len)]; e; e = e->next)
        if (e->len == len && memcmp(e->cid, cid, len) == 0)
            return e->c;
    return NULL;
}

/* ---- sending ------------------------------------------------------------------------------ */

static int send_gso(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                    const uint8_t *data, size_t len, size_t seg)
{
    struct iovec iov = {(void *)data, len};
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = {
        .msg_name = (void *)remote, .msg_namelen = remotelen, .msg_iov = &iov, .msg_iovlen = 1};
    if (len > seg) {
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t v = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &v, sizeof(v));
    }
    ssize_t n;
    do
        n = sendmsg(s->fd, &m, 0);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : 0;
}

static int send_mmsg(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                     const uint8_t *data, size_t len, size_t seg)
{
    struct mmsghdr msgs[64];
    struct iovec iov[64];
    size_t n = 0;
    for (size_t off = 0; off < len && n < 64; off += seg, n++) {
        iov[n].iov_base = (void *)(data + off);
        iov[n].iov_len = UTIL_MIN(seg, len - off);
        memset(&msgs[n], 0, sizeof(msgs[n]));
        msgs[n].msg_hdr.msg_name = (void *)remote;
        msgs[n].msg_hdr.msg_namelen = remotelen;
        msgs[n].msg_hdr.msg_iov = &iov[n];
        msgs[n].msg_hdr.msg_iovlen = 1;
    }
    size_t done = 0;
    while (done < n) {
        int r = sendmmsg(s->fd, msgs + done, (unsigned)(n - done), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* packets already sent are gone; the rest is lost like any packet (recovery) */
            return done > 0 ? 0 : -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

int h3_sock_send(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                 const uint8_t *data, size_t len, size_t seg)
{
    struct worker *w = s->hw->w;
    int rc;
    if (len > seg && w->edge->cfg->h3_gso && !s->hw->no_gso) {
        rc = send_gso(s, remote, remotelen, data, len, seg);
        if (rc == -EIO || rc == -EINVAL || rc == -EOPNOTSUPP) {
            /* no GSO here (old kernel, device without it): fall back for good */
            log_msg(LOG_WARN, "h3: UDP GSO unavailable (%s): sending packets one by one",
                    strerror(-rc));
            s->hw->no_gso = true;
            rc = send_mmsg(s, remote, remotelen, data, len, seg);
        }
    } else {
        rc = send_mmsg(s, remote, remotelen, data, len, seg);
    }
    if (rc == 0) {
        METRIC_ADD(w, quic_datagrams_sent, (len + seg - 1) / seg);
        METRIC_ADD(w, bytes_sent, len);
    } else if (rc == -EWOULDBLOCK) {
        rc = -EAGAIN;
    }
    return rc;
}

void h3_sock_want_write(struct h3_sock *s)
{
    if (!event_pending(s->wev, EV_WRITE, NULL))
        event_add(s->wev, NULL);
}

static void sock_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h3_sock *s = arg;
    h3_conns_writable(s->hw);
}

/* A stateless reply (Version Negotiation, Retry, reset, close): best effort. */
static void send_reply(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                       const uint8_t *data, size_t len)
{
    h3_sock_send(s, remote, remotelen, data, len, len);
}

/* ---- stateless answers -------------------------------------------------------------------- */

static void send_version_negotiation(struct h3_sock *s, const struct sockaddr *remote,
                                     socklen_t remotelen, const ngtcp2_version_cid *vc,
                                     size_t pktlen)
{
    if (pktlen < 1200)
        return; /* RFC 9000 6.1: only for datagrams a client Initial could be */
    uint8_t out[256];
    uint8_t r;
    fill_random(&r, 1);
    const uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
        out, sizeof(out), r, vc->scid, vc->scidlen, vc->dcid, vc->dcidlen, sv, ARRAY_SIZE(sv));
    if (n > 0) {
        METRIC_INC(s->hw->w, quic_version_negotiation_sent);
        send_reply(s, remote, remotelen, out, (size_t)n);
    }
}

static void send_stateless_reset(struct h3_sock *s, const struct sockaddr *remote,
                                 socklen_t remotelen, const uint8_t *dcid, size_t dcidlen,
                                 size_t pktlen)
{
    struct h3_worker *hw = s->hw;
    /* RFC 9000 10.3: smaller than the packet that provoked it (no loops between endpoints),
     * and at least 21 bytes of which the last 16 are the token. */
    size_t len = pktlen - 1 < 43 ? pktlen - 1 : 43;
    if (pktlen <= 22 || len < NGTCP2_MIN_STATELESS_RESET_RANDLEN + 1 + 16)
        return;
    int64_t now = edge_mono_us();
    hw->reset_tokens += (double)(now - hw->reset_last_us) * RESET_RATE / 1e6;
    hw->reset_last_us = now;
    if (hw->reset_tokens > RESET_RATE)
        hw->reset_tokens = RESET_RATE;
    if (hw->reset_tokens < 1.0)
        return;
    hw->reset_tokens -= 1.0;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, dcid, dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    if (ngtcp2_crypto_generate_stateless_reset_token(token, hw->node->secret,
                                                     sizeof(hw->node->secret), &cid) != 0)
        return;
    uint8_t rnd[64];
    size_t randlen = len - 1 - NGTCP2_STATELESS_RESET_TOKENLEN;
    fill_random(rnd, randlen);
    uint8_t out[64];
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(out, len, token, rnd, randlen);
    if (n > 0) {
        METRIC_INC(hw->w, quic_stateless_reset_sent);
        send_reply(s, remote, remotelen, out, (size_t)n);
    }
}

static void send_retry(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                       const ngtcp2_pkt_hd *hd)
{
    struct h3_worker *hw = s->hw;
    uint8_t cidb[H3_CID_LEN];
    h3_cid_make(cidb, hw->w->id);
    ngtcp2_cid scid;
    ngtcp2_cid_init(&scid, cidb, sizeof(cidb));
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
    ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token(
        token, hw->node->secret, sizeof(hw->node->secret), hd->version,
        (const ngtcp2_sockaddr *)remote, remotelen, &scid, &hd->dcid, now_ns());
    if (tl < 0)
        return;
    uint8_t out[H3_MAX_PKT];
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(out, sizeof(out), hd->version, &hd->scid, &scid,
                                               &hd->dcid, token, (size_t)tl);
    if (n > 0) {
        METRIC_INC(hw->w, quic_retry_sent);
        send_reply(s, remote, remotelen, out, (size_t)n);
    }
}

/* An Initial whose token does not verify: close without state (RFC 9000 8.1.2). */
static void send_invalid_token(struct h3_sock *s, const struct sockaddr *remote,
                               socklen_t remotelen, const ngtcp2_pkt_hd *hd)
{
    uint8_t out[H3_MAX_PKT];
    ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(out, sizeof(out), hd->version, &hd->scid,
                                                          &hd->dcid, NGTCP2_INVALID_TOKEN, NULL, 0);
    if (n > 0)
        send_reply(s, remote, remotelen, out, (size_t)n);
}

static void drop(struct h3_worker *hw, const char *why)
{
    METRIC_INC(hw->w, quic_datagrams_dropped);
    log_ratelimited(LOG_DEBUG, "h3: dropped a datagram: %s", why);
}

/* A long-header packet for no known connection: maybe a new one. */
static void accept_initial(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                           const uint8_t *data, size_t len)
{
    struct h3_worker *hw = s->hw;
    const struct config *cfg = hw->w->edge->cfg;
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data, len) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
        drop(hw, "not an acceptable first packet");
        return;
    }
    if (hw->w->stopping) {
        drop(hw, "shutting down");
        return;
    }
    struct h3_initial in = {.hd = &hd, .data = data, .len = len};
    ngtcp2_cid odcid;
    if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(&odcid, hd.token.base, hd.token.len, hw->node->secret,
                                             sizeof(hw->node->secret), hd.version,
                                             (const ngtcp2_sockaddr *)remote, remotelen, &hd.dcid,
                                             RETRY_TOKEN_LIFETIME, now_ns()) != 0) {
            METRIC_INC(hw->w, quic_retry_failed);
            send_invalid_token(s, remote, remotelen, &hd);
            return;
        }
        in.odcid = &odcid;
        in.retried = true;
    } else if (cfg->h3_retry ||
               (cfg->h3_retry_under_load > 0 && hw->handshaking >= cfg->h3_retry_under_load)) {
        send_retry(s, remote, remotelen, &hd);
        return;
    }
    if (h3_conn_new(s, remote, remotelen, &in) == NULL)
        drop(hw, "connection not created");
}

static void forward(struct h3_worker *hw, unsigned owner, size_t sock,
                    const struct sockaddr *remote, socklen_t remotelen, const uint8_t *data,
                    size_t len)
{
    struct h3_worker *to = hw->w->edge->workers[owner].h3;
    struct h3_fwd *f = xmalloc(sizeof(*f) + len);
    f->sock = sock;
    memcpy(&f->remote, remote, remotelen);
    f->remotelen = remotelen;
    f->len = len;
    memcpy(f->data, data, len);
    METRIC_INC(hw->w, quic_datagrams_forwarded);
    pthread_mutex_lock(&to->inbox_lock);
    bool was_empty = to->inbox == NULL;
    f->next = to->inbox;
    to->inbox = f;
    pthread_mutex_unlock(&to->inbox_lock);
    if (was_empty)
        event_active(to->inbox_ev, EV_READ, 0);
}

static void dispatch(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                     const uint8_t *data, size_t len, bool forwarded)
{
    struct h3_worker *hw = s->hw;
    struct edge *e = hw->w->edge;
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, H3_CID_LEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        send_version_negotiation(s, remote, remotelen, &vc, len);
        return;
    }
    if (rv != 0 || vc.dcidlen == 0) {
        drop(hw, "malformed header");
        return;
    }
    unsigned owner = h3_cid_owner(data, len, (unsigned)e->n_workers);
    if (owner != hw->w->id && !forwarded) {
        forward(hw, owner, (size_t)(s - hw->socks), remote, remotelen, data, len);
        return;
    }
    struct h3_conn *c = h3_cid_lookup(hw, vc.dcid, vc.dcidlen);
    if (c != NULL) {
        h3_conn_recv(c, s, remote, remotelen, data, len);
        return;
    }
    if (data[0] & 0x80)
        accept_initial(s, remote, remotelen, data, len);
    else
        send_stateless_reset(s, remote, remotelen, vc.dcid, vc.dcidlen, len);
}

static void inbox_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h3_worker *hw = arg;
    pthread_mutex_lock(&hw->inbox_lock);
    struct h3_fwd *f = hw->inbox;
    hw->inbox = NULL;
    pthread_mutex_unlock(&hw->inbox_lock);
    /* reverse: the list was pushed LIFO; keep the order packets arrived in */
    struct h3_fwd *rev = NULL;
    while (f) {
        struct h3_fwd *next = f->next;
        f->next = rev;
        rev = f;
        f = next;
    }
    for (size_t n = 0; rev; n++) {
        struct h3_fwd *next = rev->next;
        if (n < INBOX_MAX && rev->sock < hw->n_socks)
            dispatch(&hw->socks[rev->sock], (struct sockaddr *)&rev->remote, rev->remotelen,
                     rev->data, rev->len, true);
        free(rev);
        rev = next;
    }
}

static void sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h3_sock *s = arg;
    struct h3_worker *hw = s->hw;
    struct mmsghdr msgs[RX_BATCH];
    struct iovec iov[RX_BATCH];
    struct sockaddr_storage addrs[RX_BATCH];
    for (int round = 0; round < RX_ROUNDS; round++) {
        for (size_t i = 0; i < RX_BATCH; i++) {
            iov[i].iov_base = hw->rxbuf + i * RX_SLOT;
            iov[i].iov_len = RX_SLOT;
            memset(&msgs[i], 0, sizeof(msgs[i]));
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s->fd, msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            METRIC_INC(hw->w, quic_datagrams_received);
            METRIC_ADD(hw->w, bytes_received, msgs[i].msg_len);
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                drop(hw, "datagram larger than the receive buffer");
                continue;
            }
            dispatch(s, (struct sockaddr *)&addrs[i], msgs[i].msg_hdr.msg_namelen, iov[i].iov_base,
                     msgs[i].msg_len, false);
        }
        if (n < RX_BATCH)
            return;
    }
}

/* ---- worker lifecycle --------------------------------------------------------------------- */

static int sock_open(struct h3_worker *hw, struct h3_sock *s, const struct conf_addr *a)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(a->text, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERR, "h3_listen %s: not a numeric address", a->text);
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, buf = SOCK_BUF;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /* QUIC datagrams must not be fragmented (RFC 9000 14) */
    int pmtu = IP_PMTUDISC_DO;
    if (ss.ss_family == AF_INET)
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof(pmtu));
    else
        setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof(pmtu));
    if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0) {
        int err = errno;
        log_msg(LOG_ERR, "h3_listen %s: %s", a->text, strerror(err));
        close(fd);
        return -err;
    }
    s->hw = hw;
    s->fd = fd;
    s->locallen = sizeof(s->local);
    getsockname(fd, (struct sockaddr *)&s->local, &s->locallen);
    s->port = (uint16_t)a->port;
    s->rev = event_new(hw->w->base, fd, EV_READ | EV_PERSIST, sock_read_cb, s);
    s->wev = event_new(hw->w->base, fd, EV_WRITE, sock_write_cb, s);
    event_add(s->rev, NULL);
    return 0;
}

int h3_worker_create(struct worker *w, struct h3_node *node)
{
    const struct config *cfg = w->edge->cfg;
    struct h3_worker *hw = xcalloc(1, sizeof(*hw));
    hw->w = w;
    hw->node = node;
    w->h3 = hw;
    fill_random(hw->hash_key, sizeof(hw->hash_key));
    hw->tab_size = 1024;
    hw->tab = xcalloc(hw->tab_size, sizeof(*hw->tab));
    hw->rxbuf = xmalloc((size_t)RX_BATCH * RX_SLOT);
    hw->reset_tokens = RESET_RATE;
    hw->reset_last_us = edge_mono_us();
    pthread_mutex_init(&hw->inbox_lock, NULL);
    hw->inbox_ev = event_new(w->base, -1, 0, inbox_cb, hw);
    hw->socks = xcalloc(cfg->n_h3_listen, sizeof(*hw->socks));
    for (size_t i = 0; i < cfg->n_h3_listen; i++) {
        int rc = sock_open(hw, &hw->socks[i], &cfg->h3_listen[i]);
        if (rc != 0)
            return rc;
        hw->n_socks++;
    }
    return 0;
}

void h3_steering_attach(struct edge *e)
{
    if (e->n_workers <= 1 || e->workers[0].h3 == NULL)
        return;
    struct sock_filter code[H3_BPF_LEN];
    h3_cid_bpf(code, (unsigned)e->n_workers);
    struct sock_fprog prog = {H3_BPF_LEN, code};
    struct h3_worker *hw = e->workers[0].h3;
    for (size_t i = 0; i < hw->n_socks; i++) {
        if (setsockopt(hw->socks[i].fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                       sizeof(prog)) != 0)
            log_msg(LOG_WARN,
                    "h3_listen %s: cannot attach the packet steering program (%s): "
                    "workers will forward QUIC packets to each other",
                    e->cfg->h3_listen[i].text, strerror(errno));
    }
}

void h3_worker_destroy(struct worker *w)
{
    struct h3_worker *hw = w->h3;
    if (hw == NULL)
        return;
    h3_close_all(w);
    h3_reap(w);
    for (size_t i = 0; i < hw->n_socks; i++) {
        event_free(hw->socks[i].rev);
        event_free(hw->socks[i].wev);
        close(hw->socks[i].fd);
    }
    while (hw->inbox) {
        struct h3_fwd *f = hw->inbox;
        hw->inbox = f->next;
        free(f);
    }
    event_free(hw->inbox_ev);
    pthread_mutex_destroy(&hw->inbox_lock);
    for (size_t i = 0; i < hw->tab_size; i++) {
        while (hw->tab[i]) {
            struct h3_cid_entry *e = hw->tab[i];
            hw->tab[i] = e->next;
            free(e);
        }
    }
    free(hw->tab);
    free(hw->socks);
    free(hw->rxbuf);
    free(hw);
    w->h3 = NULL;
}
