/* tests/unit/http/cond.c: entity-tags and preconditions (RFC 9110 8.8.3, 13.1, 13.2). */
#include "http/http.h"
#include "tests/unit/tap.h"

#define LM 784111777 /* Sun, 06 Nov 1994 08:49:37 GMT */
#define LM_S "Sun, 06 Nov 1994 08:49:37 GMT"
#define BEFORE_S "Sat, 05 Nov 1994 08:49:37 GMT"
#define AFTER_S "Mon, 07 Nov 1994 08:49:37 GMT"

struct ccase {
    const char *h[3][2];
    const char *etag;
    int64_t lm;
    bool get;
    enum http_cond_result want;
    const char *what;
};

static const struct ccase cases[] = {
    {{{NULL}}, "\"a\"", LM, true, HTTP_COND_PROCEED, "no preconditions"},
    /* If-Match: strong comparison */
    {{{"If-Match", "\"a\""}}, "\"a\"", LM, true, HTTP_COND_PROCEED, "If-Match equal"},
    {{{"If-Match", "\"b\", \"a\""}}, "\"a\"", LM, false, HTTP_COND_PROCEED, "If-Match list"},
    {{{"If-Match", "\"b\""}}, "\"a\"", LM, true, HTTP_COND_FAILED, "If-Match differs -> 412"},
    {{{"If-Match", "W/\"a\""}}, "\"a\"", LM, true, HTTP_COND_FAILED, "If-Match weak never"},
    {{{"If-Match", "\"a\""}}, "W/\"a\"", LM, true, HTTP_COND_FAILED, "If-Match vs weak etag"},
    {{{"If-Match", "*"}}, "", -1, true, HTTP_COND_PROCEED, "If-Match * with a representation"},
    {{{"If-Match", "\"a\""}}, "", LM, true, HTTP_COND_FAILED, "If-Match without stored etag"},
    /* If-Unmodified-Since only without If-Match */
    {{{"If-Unmodified-Since", BEFORE_S}}, "", LM, true, HTTP_COND_FAILED, "IUS older -> 412"},
    {{{"If-Unmodified-Since", LM_S}}, "", LM, true, HTTP_COND_PROCEED, "IUS equal"},
    {{{"If-Unmodified-Since", "garbage"}}, "", LM, true, HTTP_COND_PROCEED, "IUS invalid ignored"},
    {{{"If-Unmodified-Since", BEFORE_S}}, "", -1, true, HTTP_COND_PROCEED, "IUS without LM"},
    {{{"If-Match", "\"a\""}, {"If-Unmodified-Since", BEFORE_S}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_PROCEED,
     "If-Match wins over IUS"},
    /* If-None-Match: weak comparison */
    {{{"If-None-Match", "\"a\""}}, "\"a\"", LM, true, HTTP_COND_NOT_MODIFIED, "INM match -> 304"},
    {{{"If-None-Match", "W/\"a\""}}, "\"a\"", LM, true, HTTP_COND_NOT_MODIFIED, "INM weak"},
    {{{"If-None-Match", "\"a\""}}, "W/\"a\"", LM, true, HTTP_COND_NOT_MODIFIED, "INM weak etag"},
    {{{"If-None-Match", "\"x\", W/\"a\""}}, "\"a\"", LM, true, HTTP_COND_NOT_MODIFIED, "INM list"},
    {{{"If-None-Match", "\"x\""}, {"If-None-Match", "\"a\""}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_NOT_MODIFIED,
     "INM across lines"},
    {{{"If-None-Match", "\"b\""}}, "\"a\"", LM, true, HTTP_COND_PROCEED, "INM no match"},
    {{{"If-None-Match", "\"a\""}}, "\"a\"", LM, false, HTTP_COND_FAILED, "INM match, POST: 412"},
    {{{"If-None-Match", "*"}}, "", -1, true, HTTP_COND_NOT_MODIFIED, "INM * -> 304"},
    {{{"If-None-Match", "*"}}, "", -1, false, HTTP_COND_FAILED, "INM * unsafe -> 412"},
    {{{"If-None-Match", "a"}}, "a", LM, true, HTTP_COND_PROCEED, "unquoted tags never match"},
    /* If-Modified-Since only without If-None-Match, only GET/HEAD */
    {{{"If-Modified-Since", LM_S}}, "", LM, true, HTTP_COND_NOT_MODIFIED, "IMS equal -> 304"},
    {{{"If-Modified-Since", AFTER_S}}, "", LM, true, HTTP_COND_NOT_MODIFIED, "IMS later -> 304"},
    {{{"If-Modified-Since", BEFORE_S}}, "", LM, true, HTTP_COND_PROCEED, "IMS older -> 200"},
    {{{"If-Modified-Since", LM_S}}, "", LM, false, HTTP_COND_PROCEED, "IMS ignored on POST"},
    {{{"If-Modified-Since", LM_S}}, "", -1, true, HTTP_COND_PROCEED, "IMS without LM"},
    {{{"If-Modified-Since", "yesterday"}}, "", LM, true, HTTP_COND_PROCEED, "IMS invalid"},
    {{{"If-Modified-Since", LM_S}, {"If-Modified-Since", LM_S}},
     "",
     LM,
     true,
     HTTP_COND_PROCEED,
     "IMS repeated: ignored"},
    {{{"If-None-Match", "\"b\""}, {"If-Modified-Since", AFTER_S}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_PROCEED,
     "INM present: IMS not evaluated"},
    {{{"If-None-Match", "\"a\""}, {"If-Modified-Since", BEFORE_S}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_NOT_MODIFIED,
     "INM decides over an older IMS"},
    {{{"If-Match", "\"b\""}, {"If-None-Match", "\"a\""}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_FAILED,
     "If-Match evaluated first"},
    {{{"If-Unmodified-Since", BEFORE_S}, {"If-None-Match", "\"a\""}},
     "\"a\"",
     LM,
     true,
     HTTP_COND_FAILED,
     "IUS evaluated before INM"},
};

int main(void)
{
    /* RFC 9110 8.8.3.2 table */
    static const struct {
        const char *a, *b;
        bool strong, weak;
    } cmp[] = {
        {"W/\"1\"", "W/\"1\"", false, true},
        {"W/\"1\"", "W/\"2\"", false, false},
        {"W/\"1\"", "\"1\"", false, true},
        {"\"1\"", "\"1\"", true, true},
        {"\"\"", "\"\"", true, true},
        {"\"1\"", "\"01\"", false, false},
        {"1", "1", false, false},
        {"\"1", "\"1", false, false},
        {"w/\"1\"", "\"1\"", false, false},
        {"\"a\"b\"", "\"a\"b\"", false, false},
        {" \"1\" ", "\"1\"", true, true},
    };
    for (size_t i = 0; i < sizeof(cmp) / sizeof(cmp[0]); i++) {
        is_int(http_etag_match(str_cstr(cmp[i].a), str_cstr(cmp[i].b), false), cmp[i].strong,
               "strong %s vs %s", cmp[i].a, cmp[i].b);
        is_int(http_etag_match(str_cstr(cmp[i].a), str_cstr(cmp[i].b), true), cmp[i].weak,
               "weak %s vs %s", cmp[i].a, cmp[i].b);
    }

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_headers h;
        http_headers_init(&h);
        for (int k = 0; k < 3 && cases[i].h[k][0]; k++)
            http_headers_add(&h, str_cstr(cases[i].h[k][0]), str_cstr(cases[i].h[k][1]));
        is_int(http_cond_evaluate(&h, str_cstr(cases[i].etag), cases[i].lm, cases[i].get),
               cases[i].want, "%s", cases[i].what);
        http_headers_fini(&h);
    }

    /* If-Range (RFC 9110 13.1.5) */
    ok(http_if_range_ok(STR_LIT("\"a\""), STR_LIT("\"a\""), LM), "If-Range strong etag match");
    ok(!http_if_range_ok(STR_LIT("\"b\""), STR_LIT("\"a\""), LM), "If-Range etag mismatch");
    ok(!http_if_range_ok(STR_LIT("W/\"a\""), STR_LIT("W/\"a\""), LM), "If-Range weak etag: no");
    ok(!http_if_range_ok(STR_LIT("\"a\""), STR_LIT("W/\"a\""), LM), "If-Range vs weak stored");
    ok(!http_if_range_ok(STR_LIT("\"a\""), STR_NULL, LM), "If-Range etag, none stored");
    ok(http_if_range_ok(STR_LIT(LM_S), STR_NULL, LM), "If-Range date equal to LM");
    ok(!http_if_range_ok(STR_LIT(AFTER_S), STR_NULL, LM), "If-Range later date: exact only");
    ok(!http_if_range_ok(STR_LIT(BEFORE_S), STR_NULL, LM), "If-Range earlier date");
    ok(!http_if_range_ok(STR_LIT(LM_S), STR_NULL, -1), "If-Range date, no LM");
    ok(!http_if_range_ok(STR_LIT("garbage"), STR_LIT("\"a\""), LM), "If-Range invalid");
    ok(!http_if_range_ok(STR_LIT(""), STR_LIT("\"a\""), LM), "If-Range empty");
    return tap_done();
}
