/*
 * lib/log.h: the error log (stderr, one line per event, timestamped) and rate limiting for
 * messages caused by bad input, so that a flood of bad requests cannot flood the log.
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef OUTPOST_LIB_LOG_H
#define OUTPOST_LIB_LOG_H

enum log_level {
    LOG_ERR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

/* Messages above this level are dropped; default LOG_INFO. */
void log_set_level(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* At most a few lines per second per call site; the rest are counted and summarised. */
#define log_ratelimited(level, ...)                                                                \
    do {                                                                                           \
        static struct log_rl log_rl_site_;                                                         \
        if (log_rl_allow(&log_rl_site_))                                                           \
            log_msg(level, __VA_ARGS__);                                                           \
    } while (0)

struct log_rl {
    long window; /* second of the current window */
    unsigned count; /* lines in this window */
};
int log_rl_allow(struct log_rl *rl);

#endif
