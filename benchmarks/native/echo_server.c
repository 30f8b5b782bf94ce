/*
 * echo_server: a minimal, fast native echo server, the reference the benchmarks
 * compare echokit against.
 *
 *   echo_server [--tcp HOST:PORT]... [--unix PATH]... [--udp HOST:PORT]...
 *
 * One thread, one epoll set (level-triggered), non-blocking sockets. It serves TCP
 * over IPv4 (TCP_NODELAY on every connection), unix stream sockets and UDP at once.
 * Once everything listens it prints one line per listener on stdout and flushes:
 *
 *   tcp 127.0.0.1 40765
 *   unix /tmp/x/echo.sock
 *   udp 127.0.0.1 51234
 *
 * Streams: each connection has one buffer (allocated at its first read). What is read is written back at once; if
 * the write is partial, the rest stays in the buffer, the connection stops reading
 * (EPOLLOUT only) until it is flushed, so memory is bounded and a client that does not
 * read is not buffered without end. On the peer's half-close (EOF) everything read is
 * still echoed, then the connection is closed.
 *
 * UDP: every datagram (up to 65,535 bytes) is sent back to its sender; a datagram
 * that cannot be sent at once (EAGAIN) is dropped, as UDP allows.
 *
 * SIGTERM or SIGINT (read through a signalfd in the same epoll set) stops it: listeners
 * and connections are closed, unix socket paths removed, exit status 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)
#define MAX_LISTENERS 16
#define MAX_EVENTS 256

enum kind { K_TCP_LISTEN, K_UNIX_LISTEN, K_UDP, K_SIGNAL, K_CONN };

struct conn {
    enum kind kind;         /* first, so listeners and connections share the tag */
    int fd;
    size_t off, len;        /* pending echo: buf[off .. off+len) */
    unsigned char *buf;
};

struct listener {
    enum kind kind;
    int fd;
    char path[108];
};

static int epfd;
static unsigned char udp_buf[65536];
static long open_conns;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: echo_server [--tcp HOST:PORT]... [--unix PATH]... [--udp HOST:PORT]...\n");
    exit(2);
}

static void parse_hostport(const char *text, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) usage();
    memcpy(host, text, colon - text);
    host[colon - text] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "echo_server: not an IPv4 address: %s\n", host);
        exit(2);
    }
}

static void watch(int fd, uint32_t events, void *ptr, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(epfd, op, fd, &ev) < 0) die("epoll_ctl");
}

static void close_conn(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c);
    open_conns--;
}

/* Write what is pending; return 0 when flushed, 1 if some is left, -1 on error. */
static int flush_pending(struct conn *c) {
    while (c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        c->off += (size_t)n;
        c->len -= (size_t)n;
    }
    c->off = 0;
    return 0;
}

static void on_readable(struct conn *c) {
    if (!c->buf && !(c->buf = malloc(BUF_SIZE))) {  /* idle connections have no buffer */
        close_conn(c);
        return;
    }
    /* A few reads per wakeup, so one busy connection cannot starve the others. */
    for (int round = 0; round < 16; round++) {
        ssize_t n = recv(c->fd, c->buf, BUF_SIZE, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            close_conn(c);
            return;
        }
        if (n == 0) {  /* EOF (half-close): all read so far is already echoed, so close */
            close_conn(c);
            return;
        }
        c->off = 0;
        c->len = (size_t)n;
        int r = flush_pending(c);
        if (r < 0) {
            close_conn(c);
            return;
        }
        if (r > 0) {  /* stop reading until the echo is written */
            watch(c->fd, EPOLLOUT, c, EPOLL_CTL_MOD);
            return;
        }
        if ((size_t)n < BUF_SIZE) return;  /* most likely drained */
    }
}

static void on_writable(struct conn *c) {
    int r = flush_pending(c);
    if (r < 0) {
        close_conn(c);
        return;
    }
    if (r == 0) watch(c->fd, EPOLLIN | EPOLLRDHUP, c, EPOLL_CTL_MOD);
}

static void on_accept(struct listener *l) {
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EMFILE || errno == ENFILE) {
                /* out of descriptors: leave it in the backlog, try on the next wakeup */
                return;
            }
            perror("accept4");
            return;
        }
        if (l->kind == K_TCP_LISTEN) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->kind = K_CONN;
        c->fd = fd;
        open_conns++;
        watch(fd, EPOLLIN | EPOLLRDHUP, c, EPOLL_CTL_ADD);
    }
}

static void on_datagram(struct listener *l) {
    for (int round = 0; round < 64; round++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(l->fd, udp_buf, sizeof udp_buf, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  /* EAGAIN, or an ICMP error reported on the socket: nothing to do */
        }
        /* EAGAIN on send: the datagram is dropped, as UDP allows. */
        sendto(l->fd, udp_buf, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&from, fromlen);
    }
}

static int listen_socket(int domain, int type, const struct sockaddr *sa, socklen_t len) {
    int fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (domain == AF_INET) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (bind(fd, sa, len) < 0) die("bind");
    if (type == SOCK_STREAM && listen(fd, 4096) < 0) die("listen");
    return fd;
}

int main(int argc, char **argv) {
    struct listener listeners[MAX_LISTENERS];
    int nlisteners = 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc || nlisteners == MAX_LISTENERS) usage();
        struct listener *l = &listeners[nlisteners];
        memset(l, 0, sizeof *l);
        const char *value = argv[++i];
        if (!strcmp(argv[i - 1], "--tcp") || !strcmp(argv[i - 1], "--udp")) {
            struct sockaddr_in sa;
            parse_hostport(value, &sa);
            int udp = !strcmp(argv[i - 1], "--udp");
            l->kind = udp ? K_UDP : K_TCP_LISTEN;
            l->fd = listen_socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM,
                                  (struct sockaddr *)&sa, sizeof sa);
            if (udp) {
                int size = 4 * 1024 * 1024;
                setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
                setsockopt(l->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            }
        } else if (!strcmp(argv[i - 1], "--unix")) {
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            if (strlen(value) >= sizeof sa.sun_path) usage();
            strcpy(sa.sun_path, value);
            strcpy(l->path, value);
            unlink(value);
            l->kind = K_UNIX_LISTEN;
            l->fd = listen_socket(AF_UNIX, SOCK_STREAM, (struct sockaddr *)&sa, sizeof sa);
        } else {
            usage();
        }
        watch(l->fd, EPOLLIN, l, EPOLL_CTL_ADD);
        nlisteners++;
    }
    if (!nlisteners) usage();

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    static enum kind signal_tag = K_SIGNAL;
    watch(sfd, EPOLLIN, &signal_tag, EPOLL_CTL_ADD);

    for (int i = 0; i < nlisteners; i++) {
        struct listener *l = &listeners[i];
        if (l->kind == K_UNIX_LISTEN) {
            printf("unix %s\n", l->path);
            continue;
        }
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        getsockname(l->fd, (struct sockaddr *)&sa, &len);
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        printf("%s %s %d\n", l->kind == K_UDP ? "udp" : "tcp", host, ntohs(sa.sin_port));
    }
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (int running = 1; running;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            enum kind *tag = events[i].data.ptr;
            uint32_t ev = events[i].events;
            switch (*tag) {
            case K_SIGNAL:
                running = 0;
                break;
            case K_TCP_LISTEN:
            case K_UNIX_LISTEN:
                on_accept((struct listener *)tag);
                break;
            case K_UDP:
                on_datagram((struct listener *)tag);
                break;
            case K_CONN: {
                struct conn *c = (struct conn *)tag;
                if (c->len) {  /* only EPOLLOUT is watched while an echo is pending */
                    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
                } else if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
                    on_readable(c);
                }
                break;
            }
            }
            /* A connection is only ever freed while handling its own event, and each
             * fd appears at most once per batch, so no event below refers to it. */
        }
    }

    for (int i = 0; i < nlisteners; i++) {
        close(listeners[i].fd);
        if (listeners[i].kind == K_UNIX_LISTEN) unlink(listeners[i].path);
    }
    return 0;
}
