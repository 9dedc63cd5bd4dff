/*
 * tests/fuzz/conf_parse.c: libFuzzer target for the config file parser (conf/conf.c) through
 * conf_parse_buffer(), the pure entry point that conf_load() uses for files. Any input must
 * either parse into a config that passes basic invariants or fail with a message of the form
 * "NAME:..." ; a parsed config is freed so that leaks show up under ASan. The committed corpus
 * in tests/fuzz/corpus/conf_parse/ is replayed by `make fuzz-replay`.
 */
#include <stdint.h>
#include <string.h>

#include "conf/conf.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *c = NULL;
    char err[512];
    err[0] = '\0';
    int rc = conf_parse_buffer("fuzz.conf", (const char *)data, size, &c, err, sizeof(err));
    if (rc < 0) {
        ASSERT(c == NULL);
        ASSERT(strncmp(err, "fuzz.conf", 9) == 0);
        return 0;
    }
    ASSERT(c != NULL && c->n_sites > 0 &&
           c->n_listen + c->n_tls_listen + c->n_passthrough_listen > 0);
    for (size_t i = 0; i < c->n_sites; i++) {
        const struct conf_site *s = &c->sites[i];
        ASSERT(s->n_names > 0 && s->upstream < c->n_upstreams);
        ASSERT(c->upstreams[s->upstream].n_servers > 0);
        for (size_t j = 0; j < s->n_shields; j++)
            ASSERT(s->shields[j] < c->n_upstreams && c->upstreams[s->shields[j]].shield);
        /* Every name of a site must find that site (names are unique). */
        for (size_t j = 0; j < s->n_names; j++)
            ASSERT(conf_site_find(c, str_cstr(s->names[j])) == s);
    }
    conf_site_find(c, str_make((const char *)data, size > 300 ? 300 : size));
    conf_free(&c);
    ASSERT(c == NULL);
    return 0;
}
