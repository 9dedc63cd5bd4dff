/*
 * tests/fuzz/cache_record.c: libFuzzer target for the object record decoder (cache/record.c).
 * Any input either is rejected with OP_ECORRUPT or decodes into a record that
 *   - copies into a cache_obj whose fields re-encode to exactly the input (reserved bytes
 *     aside), so the decoder accepts nothing it cannot represent, and
 *   - whose every string lies inside the copy.
 * Replayed over the committed corpus by `make fuzz-replay`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cache_rec r;
    if (cache_rec_parse(data, size, &r) != 0)
        return 0;
    struct cache_obj *o = cache_rec_to_obj(&r);
    ASSERT(o->key.len == r.h.key_len && o->headers.n == r.h.n_headers && o->n_vary == r.h.n_vary &&
           o->n_tags == r.h.n_tags && o->body.len == r.h.inline_len);

    /* Re-encode from the copied object only. */
    struct buf hs, vs, ts, out;
    buf_init(&hs);
    buf_init(&vs);
    buf_init(&ts);
    buf_init(&out);
    uint32_t nh = cache_rec_sec_headers(&hs, &o->headers);
    for (size_t i = 0; i < o->n_vary; i++)
        cache_rec_sec_pair(&vs, o->vary[i].name, o->vary[i].value);
    for (size_t i = 0; i < o->n_tags; i++)
        cache_rec_sec_str(&ts, o->tags[i]);
    struct cache_rec_hdr h;
    cache_rec_hdr_from_meta(&h, o->id, o->status, &o->meta, o->body_len, r.h.access_seq);
    cache_rec_build(&out, &h, o->key, buf_str(&hs), nh, buf_str(&vs), (uint32_t)o->n_vary,
                    buf_str(&ts), (uint32_t)o->n_tags, o->body);
    ASSERT(out.len == size);
    uint8_t *want = xmemdup(data, size);
    memset(want + offsetof(struct cache_rec_hdr, reserved0), 0, 4);
    memset(want + offsetof(struct cache_rec_hdr, reserved1), 0, 4);
    ASSERT(memcmp(out.p, want, size) == 0);
    free(want);
    buf_fini(&hs);
    buf_fini(&vs);
    buf_fini(&ts);
    buf_fini(&out);
    cache_obj_unref(&o);
    return 0;
}
