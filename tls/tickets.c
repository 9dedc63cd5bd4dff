/*
 * tls/tickets.c: session ticket keys shared by every server context of a node.
 *
 * A key is 80 bytes laid out as nginx's 80-byte ssl_session_ticket_key file: a 16-byte public
 * name (sent in clear at the start of each ticket), a 32-byte HMAC-SHA256 key, a 32-byte
 * AES key. With 32 key bytes the ticket cipher is AES-256-CBC, as nginx uses for this layout,
 * so a fleet that mixes Outpost and nginx nodes can share one key file. BoringSSL's
 * SSL_CTX_set_tlsext_ticket_key_cb contract: on encrypt we write the name and a random IV and
 * set up the cipher and the HMAC; on decrypt we find the key by name, answer 0 (ticket
 * ignored: full handshake) when no key has that name, 1 when the current key made it, 2
 * (decrypt, and issue a fresh ticket under the current key) when the previous key made it.
 *
 * Rotation: `cur` encrypts; `prev`, the key that encrypted during the period before, only
 * decrypts. tls_tickets_tick() (a timer, any thread) moves cur to prev and draws a new cur
 * once cur has encrypted for `rotate_ms`; a ticket thus stays decryptable for at least one
 * period and at most two. Keys loaded from a file never rotate (every node of a fleet must
 * agree on them; the operator rotates the file and reloads).
 *
 * Threads: the callback runs on worker threads during handshakes while the timer thread may
 * rotate: the keys are shared under `lock`, held only to copy one key out. The object is
 * never freed while a server context that uses it lives (the owner frees it after the last
 * tls_server generation).
 */
#include <openssl/aes.h>
#include <openssl/cipher.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "tls/tls_int.h"

#define KEY_FILE_SIZE 80

struct ticket_key {
    uint8_t name[SSL_TICKET_KEY_NAME_LEN];
    uint8_t hmac[32];
    uint8_t aes[32];
};

struct tls_tickets {
    int64_t rotate_ms; /* <= 0 or key from a file: never rotates */
    bool rotates;
    /* shared: lock */
    pthread_mutex_t lock;
    struct ticket_key cur;
    struct ticket_key prev;
    bool prev_valid;
    bool started; /* cur_since is set (by the first tick) */
    int64_t cur_since;
};

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
    ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ASSERT(ex_index >= 0);
}

static void key_random(struct ticket_key *k)
{
    ASSERT(RAND_bytes((uint8_t *)k, sizeof(*k)) == 1);
}

int tls_tickets_new(int64_t rotate_ms, const char *key_file, struct tls_tickets **out, char *err,
                    size_t errlen)
{
    _Static_assert(sizeof(struct ticket_key) == KEY_FILE_SIZE, "nginx's 80-byte key layout");
    struct ticket_key k;
    if (key_file != NULL) {
        uint8_t *data = NULL;
        size_t len = 0;
        int rc = tls_file_read(key_file, KEY_FILE_SIZE, &data, &len);
        if (rc == OP_ETOOBIG || (rc == 0 && len != KEY_FILE_SIZE)) {
            snprintf(err, errlen, "tls_ticket_key_file %s: must hold exactly %d bytes%s", key_file,
                     KEY_FILE_SIZE, rc == OP_ETOOBIG ? " (it is larger)" : " (it is smaller)");
            if (rc == 0) {
                OPENSSL_cleanse(data, len);
                free(data);
            }
            return OP_EINVAL;
        }
        if (rc < 0) {
            snprintf(err, errlen, "tls_ticket_key_file %s: cannot read: %s", key_file,
                     strerror(-rc));
            return OP_EINVAL;
        }
        memcpy(&k, data, sizeof(k));
        OPENSSL_cleanse(data, len);
        free(data);
    } else {
        key_random(&k);
    }
    struct tls_tickets *t = xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    t->rotate_ms = rotate_ms;
    t->rotates = key_file == NULL && rotate_ms > 0;
    t->cur = k;
    OPENSSL_cleanse(&k, sizeof(k));
    *out = t;
    return 0;
}

void tls_tickets_tick(struct tls_tickets *t, int64_t now_ms)
{
    if (!t->rotates)
        return;
    pthread_mutex_lock(&t->lock);
    if (!t->started) {
        t->started = true; /* the clock of the first key starts at the first tick */
        t->cur_since = now_ms;
    } else if (now_ms - t->cur_since >= t->rotate_ms) {
        /* cur stops encrypting; it still decrypts for one period, unless that period is
         * over too (the timer was late by a whole period) */
        t->prev_valid = now_ms - t->cur_since - t->rotate_ms < t->rotate_ms;
        t->prev = t->cur;
        key_random(&t->cur);
        t->cur_since = now_ms;
    }
    pthread_mutex_unlock(&t->lock);
}

void tls_tickets_free(struct tls_tickets **tp)
{
    struct tls_tickets *t = *tp;
    *tp = NULL;
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

static int ticket_key_cb(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *ectx, HMAC_CTX *hctx,
                         int encrypt)
{
    struct tls_tickets *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
    struct ticket_key k;
    int rc = 1;
    if (t == NULL)
        return encrypt ? -1 : 0;
    pthread_mutex_lock(&t->lock);
    if (encrypt) {
        k = t->cur;
    } else if (memcmp(name, t->cur.name, sizeof(k.name)) == 0) {
        k = t->cur;
    } else if (t->prev_valid && memcmp(name, t->prev.name, sizeof(k.name)) == 0) {
        k = t->prev;
        rc = 2; /* renew: the client gets a ticket under the current key */
    } else {
        rc = 0; /* unknown or expired key: full handshake */
    }
    pthread_mutex_unlock(&t->lock);
    if (rc == 0)
        return 0;
    if (encrypt) {
        memcpy(name, k.name, sizeof(k.name));
        if (RAND_bytes(iv, AES_BLOCK_SIZE) != 1)
            rc = -1;
    }
    if (rc > 0 && (!EVP_CipherInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv, encrypt) ||
                   !HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL)))
        rc = encrypt ? -1 : 0;
    OPENSSL_cleanse(&k, sizeof(k));
    return rc;
}

void tls_tickets_attach(struct tls_tickets *t, SSL_CTX *ctx)
{
    pthread_once(&ex_once, ex_init);
    ASSERT(SSL_CTX_set_ex_data(ctx, ex_index, t) == 1);
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_key_cb);
    if (t->rotates) {
        /* Tell clients not to keep tickets longer than we can surely decrypt them (one
         * period); never lengthen BoringSSL's defaults (2h for TLS 1.2, 2 days for 1.3). */
        int64_t s = t->rotate_ms / 1000 > 0 ? t->rotate_ms / 1000 : 1;
        if (s < (int64_t)SSL_CTX_get_timeout(ctx))
            SSL_CTX_set_timeout(ctx, (uint32_t)s);
        if (s < SSL_DEFAULT_SESSION_PSK_DHE_TIMEOUT)
            SSL_CTX_set_session_psk_dhe_timeout(ctx, (uint32_t)s);
    }
}
