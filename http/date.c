/*
 * http/date.c: HTTP-date parsing and formatting (RFC 9110 5.6.7).
 *
 * Pure functions, callable from any thread. No libc time functions are used: timegm() and
 * gmtime_r() depend on the TZ machinery and strftime() on the locale, so the conversion
 * between civil dates and days since the epoch is done here with the proleptic Gregorian
 * calendar arithmetic (Howard Hinnant's days_from_civil / civil_from_days).
 *
 * Accepted forms, after trimming OWS:
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
 *   rfc850-date  "Sunday, 06-Nov-94 08:49:37 GMT"
 *   asctime-date "Sun Nov  6 08:49:37 1994"
 * Anything else is invalid. Day and month names and "GMT" are compared case-insensitively:
 * the grammar says case-sensitive, but no legitimate sender is confused by the case and
 * the common caches (nginx, Varnish, ATS) accept either, so strictness there only turns
 * a usable Expires into an "already expired" one. The day name is required but not checked
 * against the date: a wrong weekday does not make the instant ambiguous.
 * Seconds may be 60 (a leap second, RFC 5322 3.3); it is folded into the next minute.
 */
#include "http/http.h"

static const char *const wkday[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
static const char *const weekday_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                            "Friday", "Saturday", "Sunday"};
static const char *const month[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

/* A small cursor over the input; every helper fails without moving on mismatch. */
struct cur {
    const char *p;
    size_t n;
};

static bool lit(struct cur *c, char ch)
{
    if (c->n == 0 || *c->p != ch)
        return false;
    c->p++;
    c->n--;
    return true;
}

static bool digits(struct cur *c, size_t count, unsigned *out)
{
    unsigned v = 0;
    if (c->n < count)
        return false;
    for (size_t i = 0; i < count; i++) {
        unsigned d = (unsigned char)c->p[i] - '0';
        if (d > 9)
            return false;
        v = v * 10 + d;
    }
    c->p += count;
    c->n -= count;
    *out = v;
    return true;
}

/* Match one of `names` (case-insensitive, exact length); returns its index or -1. */
static int name(struct cur *c, const char *const *names, size_t count, size_t len)
{
    if (c->n < len)
        return -1;
    for (size_t i = 0; i < count; i++) {
        if (strlen(names[i]) == len && str_caseeq(str_make(c->p, len), str_cstr(names[i]))) {
            c->p += len;
            c->n -= len;
            return (int)i;
        }
    }
    return -1;
}

static int month_name(struct cur *c)
{
    int m = name(c, month, 12, 3);
    return m < 0 ? -1 : m + 1;
}

static bool time_of_day(struct cur *c, unsigned *h, unsigned *mi, unsigned *s)
{
    return digits(c, 2, h) && lit(c, ':') && digits(c, 2, mi) && lit(c, ':') && digits(c, 2, s);
}

static bool gmt(struct cur *c)
{
    if (c->n < 3 || !str_caseeq(str_make(c->p, 3), STR_LIT("GMT")))
        return false;
    c->p += 3;
    c->n -= 3;
    return true;
}

static int assemble(int64_t y, unsigned m, unsigned d, unsigned h, unsigned mi, unsigned s,
                    int64_t *out)
{
    if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m) || h > 23 || mi > 59 || s > 60)
        return -1;
    *out = days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s;
    return 0;
}

int http_date_parse_at(struct str s, int64_t now, int64_t *out)
{
    struct cur c = {str_trim(s).p, str_trim(s).len};
    unsigned d, y4, y2, h, mi, sec;
    int m;

    if (c.n == 0)
        return -1;
    struct cur save = c;
    /* IMF-fixdate */
    if (name(&c, wkday, 7, 3) >= 0 && lit(&c, ',')) {
        if (lit(&c, ' ') && digits(&c, 2, &d) && lit(&c, ' ') && (m = month_name(&c)) > 0 &&
            lit(&c, ' ') && digits(&c, 4, &y4) && lit(&c, ' ') && time_of_day(&c, &h, &mi, &sec) &&
            lit(&c, ' ') && gmt(&c) && c.n == 0)
            return assemble(y4, (unsigned)m, d, h, mi, sec, out);
        return -1;
    }
    c = save;
    /* asctime-date: "Sun Nov  6 08:49:37 1994" */
    if (name(&c, wkday, 7, 3) >= 0 && lit(&c, ' ')) {
        if ((m = month_name(&c)) < 0 || !lit(&c, ' '))
            return -1;
        if (lit(&c, ' ')) {
            if (!digits(&c, 1, &d))
                return -1;
        } else if (!digits(&c, 2, &d)) {
            return -1;
        }
        if (lit(&c, ' ') && time_of_day(&c, &h, &mi, &sec) && lit(&c, ' ') && digits(&c, 4, &y4) &&
            c.n == 0)
            return assemble(y4, (unsigned)m, d, h, mi, sec, out);
        return -1;
    }
    c = save;
    /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
    long comma = str_chr(str_make(c.p, c.n), ',');
    if (comma < 6 || name(&c, weekday_long, 7, (size_t)comma) < 0 || !lit(&c, ','))
        return -1;
    if (!(lit(&c, ' ') && digits(&c, 2, &d) && lit(&c, '-') && (m = month_name(&c)) > 0 &&
          lit(&c, '-') && digits(&c, 2, &y2) && lit(&c, ' ') && time_of_day(&c, &h, &mi, &sec) &&
          lit(&c, ' ') && gmt(&c) && c.n == 0))
        return -1;
    /*
     * RFC 9110 5.6.7: a two-digit year that appears to be more than 50 years in the future is
     * the most recent past year with the same last two digits.
     */
    int64_t ny;
    unsigned nm, nd;
    civil_from_days(now >= 0 ? now / 86400 : -((-now + 86399) / 86400), &ny, &nm, &nd);
    int64_t year = ny - ny % 100 + y2;
    if (year > ny + 50)
        year -= 100;
    else if (year <= ny - 50)
        year += 100;
    return assemble(year, (unsigned)m, d, h, mi, sec, out);
}

int http_date_parse(struct str s, int64_t *out)
{
    return http_date_parse_at(s, HTTP_DATE_RFC850_PIVOT, out);
}

size_t http_date_format(int64_t t, char *out)
{
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t secs = t - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    /* years outside 0..9999 cannot be written in 4DIGIT: clamp to the representable range */
    if (y < 0) {
        y = 0, m = 1, d = 1, secs = 0, days = days_from_civil(0, 1, 1);
    } else if (y > 9999) {
        y = 9999, m = 12, d = 31, secs = 86399, days = days_from_civil(9999, 12, 31);
    }
    const char *wd = wkday[((days % 7) + 7) % 7];
    char *o = out;
    memcpy(o, wd, 3);
    o += 3;
    *o++ = ',';
    *o++ = ' ';
    *o++ = (char)('0' + d / 10);
    *o++ = (char)('0' + d % 10);
    *o++ = ' ';
    memcpy(o, month[m - 1], 3);
    o += 3;
    *o++ = ' ';
    unsigned yy = (unsigned)y;
    *o++ = (char)('0' + yy / 1000);
    *o++ = (char)('0' + yy / 100 % 10);
    *o++ = (char)('0' + yy / 10 % 10);
    *o++ = (char)('0' + yy % 10);
    *o++ = ' ';
    unsigned hh = (unsigned)(secs / 3600), mm = (unsigned)(secs / 60 % 60),
             ss = (unsigned)(secs % 60);
    *o++ = (char)('0' + hh / 10);
    *o++ = (char)('0' + hh % 10);
    *o++ = ':';
    *o++ = (char)('0' + mm / 10);
    *o++ = (char)('0' + mm % 10);
    *o++ = ':';
    *o++ = (char)('0' + ss / 10);
    *o++ = (char)('0' + ss % 10);
    memcpy(o, " GMT", 4);
    o += 4;
    *o = '\0';
    return (size_t)(o - out);
}
