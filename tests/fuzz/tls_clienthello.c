/*
 * tests/fuzz/tls_clienthello.c: libFuzzer target over tls_clienthello_sni() (tls/clienthello.c).
 * Checks invariants, not just crashes: a found name is non-empty, at most TLS_CH_SNI_MAX bytes
 * and only [a-z0-9._-]; sni is "" otherwise; the answer for a prefix is INCOMPLETE or the same
 * as for the whole input when decided (the parser never changes its mind when more bytes
 * come); at TLS_CH_MAX_WIRE bytes or more the answer is never INCOMPLETE.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls/clienthello.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(int r, const char *sni)
{
    size_t n = strlen(sni);
    if (r != TLS_CH_SNI) {
        CHECK(n == 0);
        return;
    }
    CHECK(n >= 1 && n <= TLS_CH_SNI_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = sni[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char sni[TLS_CH_SNI_MAX + 1];
    char part[TLS_CH_SNI_MAX + 1];
    int r = tls_clienthello_sni(data, size, sni, sizeof(sni));
    CHECK(r == TLS_CH_INVALID || r == TLS_CH_INCOMPLETE || r == TLS_CH_NO_SNI || r == TLS_CH_SNI);
    check_name(r, sni);
    if (size >= TLS_CH_MAX_WIRE)
        CHECK(r != TLS_CH_INCOMPLETE);
    /* Prefixes cut at three places: a decided prefix agrees with the whole input. */
    if (size > 0) {
        size_t cuts[3] = {size - 1, size / 2, (size_t)data[size - 1] * 131 % size};
        for (int i = 0; i < 3; i++) {
            int p = tls_clienthello_sni(data, cuts[i], part, sizeof(part));
            check_name(p, part);
            if (p != TLS_CH_INCOMPLETE) {
                CHECK(p == r);
                CHECK(strcmp(part, sni) == 0);
            }
        }
    }
    return 0;
}
