/* lib/log.c: timestamped error log lines on stderr, with per-site rate limiting. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static enum log_level max_level = LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
    max_level = level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    if (level > max_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s] ", level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

int log_rl_allow(struct log_rl *rl)
{
    long now = (long)time(NULL);
    /* Races between threads only make the limit approximate, never unsafe. */
    if (__atomic_load_n(&rl->window, __ATOMIC_RELAXED) != now) {
        __atomic_store_n(&rl->window, now, __ATOMIC_RELAXED);
        __atomic_store_n(&rl->count, 0, __ATOMIC_RELAXED);
    }
    return __atomic_add_fetch(&rl->count, 1, __ATOMIC_RELAXED) <= 5;
}
