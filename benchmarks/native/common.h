/*
 * What the native benchmark clients share: address parsing, connecting, the clock.
 *
 * A target is one of
 *   --tcp HOST:PORT   (IPv4)
 *   --unix PATH
 *   --udp HOST:PORT   (IPv4; the socket is connect()ed)
 */
#ifndef ECHOKIT_BENCH_COMMON_H
#define ECHOKIT_BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum transport { T_NONE, T_TCP, T_UNIX, T_UDP };

struct target {
    enum transport transport;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *text;
};

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline const char *transport_name(enum transport t) {
    return t == T_TCP ? "tcp" : t == T_UNIX ? "unix" : t == T_UDP ? "udp" : "?";
}

/* Parse "--tcp/--unix/--udp VALUE" into t; return 1 if argv[i] was a target option. */
static inline int parse_target(const char *opt, const char *value, struct target *t) {
    if (strcmp(opt, "--unix") && strcmp(opt, "--tcp") && strcmp(opt, "--udp")) return 0;
    memset(&t->addr, 0, sizeof t->addr);
    t->text = value;
    if (!strcmp(opt, "--unix")) {
        struct sockaddr_un *sa = (struct sockaddr_un *)&t->addr;
        if (strlen(value) >= sizeof sa->sun_path) {
            fprintf(stderr, "unix socket path too long: %s\n", value);
            exit(2);
        }
        sa->sun_family = AF_UNIX;
        strcpy(sa->sun_path, value);
        t->addrlen = sizeof *sa;
        t->transport = T_UNIX;
        return 1;
    }
    char host[64];
    const char *colon = strrchr(value, ':');
    if (!colon || (size_t)(colon - value) >= sizeof host) {
        fprintf(stderr, "expected HOST:PORT, got %s\n", value);
        exit(2);
    }
    memcpy(host, value, colon - value);
    host[colon - value] = 0;
    struct sockaddr_in *sa = (struct sockaddr_in *)&t->addr;
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", host);
        exit(2);
    }
    t->addrlen = sizeof *sa;
    t->transport = strcmp(opt, "--tcp") ? T_UDP : T_TCP;
    return 1;
}

/* A connected socket to t (blocking unless flags has SOCK_NONBLOCK); -1 on error. */
static inline int connect_target(const struct target *t, int flags) {
    int domain = t->transport == T_UNIX ? AF_UNIX : AF_INET;
    int type = t->transport == T_UDP ? SOCK_DGRAM : SOCK_STREAM;
    int fd = socket(domain, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* Connect blocking (loopback: immediate), then switch mode if asked. */
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) < 0) {
        close(fd);
        return -1;
    }
    if (t->transport == T_TCP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (flags & SOCK_NONBLOCK) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static inline void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

#endif
