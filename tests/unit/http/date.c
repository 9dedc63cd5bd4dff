/* tests/unit/http/date.c: HTTP-date parsing and formatting (RFC 9110 5.6.7). */
#include "http/http.h"
#include "tests/unit/tap.h"

static const struct {
    const char *in;
    int64_t want; /* -1: invalid */
} cases[] = {
    /* the three forms of RFC 9110 5.6.7's example */
    {"Sun, 06 Nov 1994 08:49:37 GMT", 784111777},
    {"Sunday, 06-Nov-94 08:49:37 GMT", 784111777},
    {"Sun Nov  6 08:49:37 1994", 784111777},
    {"Sun Nov 06 08:49:37 1994", 784111777},
    {"  Sun, 06 Nov 1994 08:49:37 GMT\t", 784111777},
    {"Thu, 01 Jan 1970 00:00:00 GMT", 0},
    {"Wed, 31 Dec 1969 23:59:59 GMT", -1},
    {"Tue, 29 Feb 2000 12:00:00 GMT", 951825600},
    {"Sat, 31 Dec 9999 23:59:59 GMT", 253402300799},
    {"sun, 06 nov 1994 08:49:37 gmt", 784111777}, /* tolerant of case */
    {"Sun, 06 Nov 1994 08:49:60 GMT", 784111800}, /* leap second folds forward */
    {"Mon, 06 Nov 1994 08:49:37 GMT", 784111777}, /* weekday not cross-checked */
    /* invalid */
    {"", -2},
    {"0", -2},
    {"-1", -2},
    {"Sun, 06 Nov 1994 08:49:37 UTC", -2},
    {"Sun, 06 Nov 1994 08:49:37", -2},
    {"Sun, 6 Nov 1994 08:49:37 GMT", -2},
    {"Sun,  06 Nov 1994 08:49:37 GMT", -2},
    {"Sun, 06 Nov 94 08:49:37 GMT", -2},
    {"Sun, 30 Feb 2000 08:49:37 GMT", -2},
    {"Sun, 29 Feb 1900 08:49:37 GMT", -2},
    {"Sun, 31 Apr 2000 08:49:37 GMT", -2},
    {"Sun, 00 Nov 1994 08:49:37 GMT", -2},
    {"Sun, 06 Nov 1994 24:00:00 GMT", -2},
    {"Sun, 06 Nov 1994 08:60:00 GMT", -2},
    {"Sun, 06 Nov 1994 08:49:61 GMT", -2},
    {"Sun, 06 Xyz 1994 08:49:37 GMT", -2},
    {"Sux, 06 Nov 1994 08:49:37 GMT", -2},
    {"Sun, 06 Nov 1994 08:49:37 GMT junk", -2},
    {"Sun, 06 Nov 1994 8:49:37 GMT", -2},
    {"Sunday, 06-Nov-1994 08:49:37 GMT", -2},
    {"Sundae, 06-Nov-94 08:49:37 GMT", -2},
    {"Sun Nov 6 08:49:37 1994", -2},
    {"Sun Nov  6 08:49:37 94", -2},
    {"Sun Nov  6 08:49:37 1994 ", 784111777}, /* trailing OWS trimmed */
    {"Sun, 06 Nov 1994 08:49:37 GMT\r", -2},
    {"Sun, 0a Nov 1994 08:49:37 GMT", -2},
};

int main(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t t = 12345;
        int rc = http_date_parse(str_cstr(cases[i].in), &t);
        if (cases[i].want == -2) {
            is_int(rc, -1, "invalid: \"%s\"", cases[i].in);
        } else {
            is_int(rc, 0, "valid: \"%s\"", cases[i].in);
            is_int(t, cases[i].want, "value: \"%s\"", cases[i].in);
        }
    }

    /* RFC 850 two-digit years: the 50-year rule against an explicit clock */
    int64_t t;
    int64_t y2025 = HTTP_DATE_RFC850_PIVOT;
    ok(http_date_parse_at(STR_LIT("Thursday, 01-Jan-70 00:00:00 GMT"), y2025, &t) == 0 &&
           t == 3155760000,
       "RFC 850 '70 in 2025 is 2070 (not more than 50 years ahead)");
    ok(http_date_parse_at(STR_LIT("Wednesday, 01-Jan-76 00:00:00 GMT"), y2025, &t) == 0 &&
           t == 189302400,
       "RFC 850 '76 in 2025 is 1976 (2076 would be more than 50 years ahead)");
    ok(http_date_parse_at(STR_LIT("Thursday, 01-Jan-70 00:00:00 GMT"), 0, &t) == 0 && t == 0,
       "RFC 850 '70 in 1970 is 1970");
    ok(http_date_parse_at(STR_LIT("Monday, 01-Jan-01 00:00:00 GMT"), 0, &t) == 0 && t == 978307200,
       "RFC 850 '01 in 1970 is 2001");
    ok(http_date_parse(STR_LIT("Friday, 31-Dec-99 23:59:59 GMT"), &t) == 0 && t == 946684799,
       "RFC 850 '99 with the default pivot is 1999");

    /* formatting */
    char buf[HTTP_DATE_LEN + 1];
    is_int(http_date_format(784111777, buf), HTTP_DATE_LEN, "format length");
    is_str(buf, "Sun, 06 Nov 1994 08:49:37 GMT", "format RFC example");
    http_date_format(0, buf);
    is_str(buf, "Thu, 01 Jan 1970 00:00:00 GMT", "format epoch");
    http_date_format(951825600, buf);
    is_str(buf, "Tue, 29 Feb 2000 12:00:00 GMT", "format leap day");
    http_date_format(-1, buf);
    is_str(buf, "Wed, 31 Dec 1969 23:59:59 GMT", "format before the epoch");
    http_date_format(INT64_MAX / 2, buf);
    is_str(buf, "Fri, 31 Dec 9999 23:59:59 GMT", "format clamps beyond year 9999");

    /* round trip over a spread of instants */
    unsigned seed = tap_seed();
    (void)seed;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        int64_t x = ((int64_t)rand() << 16 ^ rand()) % 253402300799;
        if (x < 0)
            x = -x;
        int64_t back = -5;
        http_date_format(x, buf);
        if (http_date_parse(str_cstr(buf), &back) != 0 || back != x)
            bad++;
    }
    is_int(bad, 0, "format/parse round trip over random instants");
    return tap_done();
}
