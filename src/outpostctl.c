/*
 * src/outpostctl.c: the operator's command-line client of a node's admin API.
 *
 *     outpostctl [--admin HOST:PORT] status     print /status (JSON)
 *     outpostctl [--admin HOST:PORT] metrics    print /metrics
 *
 * The admin address defaults to 127.0.0.1:8081 (or $OUTPOST_ADMIN). Exit status: 0 on a 2xx
 * answer, 1 on an error answer, 2 on usage or connection errors.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/util.h"

static int usage(void)
{
    fprintf(stderr, "usage: outpostctl [--admin HOST:PORT] status|metrics\n");
    return 2;
}

static int request(const char *admin, const char *method, const char *path)
{
    char host[256];
    snprintf(host, sizeof(host), "%s", admin);
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return usage();
    *colon = '\0';
    const char *port = colon + 1;
    char *h = host;
    if (h[0] == '[') {
        h++;
        char *rb = strchr(h, ']');
        if (rb)
            *rb = '\0';
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(h, port, &hints, &res) != 0 || res == NULL) {
        fprintf(stderr, "outpostctl: cannot resolve %s\n", admin);
        return 2;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "outpostctl: cannot connect to %s\n", admin);
        freeaddrinfo(res);
        return 2;
    }
    freeaddrinfo(res);
    char req[512];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     method, path, admin);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return 2;
    }
    size_t cap = 65536, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    int status = 0;
    if (len < 12 || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        fprintf(stderr, "outpostctl: bad answer from %s\n", admin);
        free(buf);
        return 2;
    }
    char *body = NULL;
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
            body = buf + i + 4;
            break;
        }
    }
    if (body)
        fwrite(body, 1, len - (size_t)(body - buf), stdout);
    free(buf);
    return status >= 200 && status < 300 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *admin = getenv("OUTPOST_ADMIN") ? getenv("OUTPOST_ADMIN") : "127.0.0.1:8081";
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--admin") == 0) {
        admin = argv[i + 1];
        i += 2;
    }
    if (i >= argc)
        return usage();
    if (strcmp(argv[i], "status") == 0)
        return request(admin, "GET", "/status");
    if (strcmp(argv[i], "metrics") == 0)
        return request(admin, "GET", "/metrics");
    return usage();
}
