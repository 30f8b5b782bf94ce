/*
 * loadgen: a native closed-loop throughput client, the same load for every server.
 *
 *   loadgen (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT | --tls HOST:PORT --ca FILE)
 *           [--connections C] [--size BYTES] [--duration SECONDS] [--warmup SECONDS]
 *           [--timeout MS] [--hostname NAME]
 *
 * C connections (or, for UDP, C connected UDP sockets), each with exactly one message
 * of SIZE bytes in flight: as soon as all of a message has come back, the next is sent.
 * One thread, one epoll set. Stream sockets are edge-triggered and always watched for
 * both directions, so a large message is read back while it is still being written (a
 * server that echoes while it reads never deadlocks the client). Every echoed byte is
 * compared with what was sent; a mismatch or a closed connection counts as an error and
 * that connection stops.
 *
 * TLS (OpenSSL): TCP plus TLS 1.2 or newer; the handshake is done before the load
 * starts, verifying the server's certificate against --ca and its name against
 * --hostname (default localhost). The JSON also names the version and cipher:
 * "tls_version", "tls_cipher".
 *
 * UDP: each datagram carries its socket's sequence number; one with no echo within
 * --timeout milliseconds (default 200) counts as lost and the next is sent; late
 * echoes of lost datagrams are skipped. Datagrams are at most 65,507 bytes.
 *
 * Traffic runs --warmup seconds (default 0.5) unmeasured, then --duration seconds
 * (default 2, at most 600) measured. Prints one JSON object on stdout:
 *   {"transport":"tcp","size":1024,"connections":10,"seconds":2.0,"messages":N,
 *    "messages_per_s":..,"mb_per_s":..,"errors":0,"lost":0,
 *    "least_per_connection":..,"most_per_connection":..}
 * mb_per_s counts echoed bytes (10^6 bytes per MB), one direction, like echokit bench.
 */
#include "common.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>

#define SCRATCH (256 * 1024)

struct conn {
    int fd;
    int dead;
    SSL *tls;              /* TLS: the connection's OpenSSL state; NULL otherwise */
    size_t sent, recvd;    /* bytes of the current message written, and echoed */
    uint64_t seq;          /* UDP: number of the datagram in flight */
    uint64_t sent_at;      /* UDP: when it was sent */
    uint64_t done;         /* messages echoed while measuring */
};

static unsigned char *msg, *scratch;
static size_t size;
static uint64_t messages, errors, lost;
static int measuring, alive;

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT | --tls HOST:PORT --ca FILE)\n"
            "               [--connections C] [--size BYTES] [--duration SECONDS] [--warmup SECONDS]\n"
            "               [--timeout MS] [--hostname NAME]\n");
    exit(2);
}

static void kill_conn(int epfd, struct conn *c, const char *why) {
    if (c->dead) return;
    static int reported;
    if (reported++ < 5) fprintf(stderr, "loadgen: connection %d: %s\n", c->fd, why);
    errors++;
    c->dead = 1;
    alive--;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->tls) SSL_free(c->tls);
    c->tls = NULL;
    close(c->fd);
}

/* A failed TLS call: 1 = wait for the socket, -1 = the connection died (closed, counted). */
static int tls_status(int epfd, struct conn *c, int ret) {
    int err = SSL_get_error(c->tls, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 1;
    char why[256];
    if (err == SSL_ERROR_ZERO_RETURN) snprintf(why, sizeof why, "the server closed TLS");
    else if (err == SSL_ERROR_SYSCALL) snprintf(why, sizeof why, "TLS: %s", errno ? strerror(errno) : "EOF");
    else ERR_error_string_n(ERR_get_error(), why, sizeof why);
    kill_conn(epfd, c, why);
    return -1;
}

/* A client TLS context: TLS 1.2 or newer, the server verified against ca_file. */
static SSL_CTX *tls_context(const char *ca_file) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        fprintf(stderr, "loadgen: cannot load CA file %s\n", ca_file);
        exit(2);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

/* Handshake on a blocking socket; the TLS state, or NULL (reason on stderr). */
static SSL *tls_connect(SSL_CTX *ctx, int fd, const char *hostname) {
    ERR_clear_error();
    SSL *tls = SSL_new(ctx);
    if (tls && SSL_set_fd(tls, fd) == 1 && SSL_set_tlsext_host_name(tls, hostname) == 1 &&
        SSL_set1_host(tls, hostname) == 1 && SSL_connect(tls) == 1)
        return tls;
    char why[256];
    unsigned long code = ERR_get_error();
    if (code) ERR_error_string_n(code, why, sizeof why);
    else snprintf(why, sizeof why, "%s", errno ? strerror(errno) : "the server closed the connection");
    fprintf(stderr, "loadgen: TLS handshake failed: %s\n", why);
    if (tls) SSL_free(tls);
    return NULL;
}

/* Stream I/O on c, plain or TLS: bytes moved (> 0), 0 to wait for the socket, or -1 when
 * the connection died (it is closed and counted). With TLS, partial writes are on, so a
 * write moves whole records of the message like send() moves bytes. */
static ssize_t conn_send(int epfd, struct conn *c, const unsigned char *buf, size_t len) {
    if (c->tls) {
        ERR_clear_error();  /* SSL_get_error reads the queue: start it empty */
        int n = SSL_write(c->tls, buf, (int)len);
        return n > 0 ? n : tls_status(epfd, c, n) < 0 ? -1 : 0;
    }
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        kill_conn(epfd, c, strerror(errno));
        return -1;
    }
}

static ssize_t conn_recv(int epfd, struct conn *c, unsigned char *buf, size_t len) {
    if (c->tls) {
        ERR_clear_error();
        int n = SSL_read(c->tls, buf, (int)len);
        return n > 0 ? n : tls_status(epfd, c, n) < 0 ? -1 : 0;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) return n;
        if (n == 0) {
            kill_conn(epfd, c, "the server closed the connection");
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        kill_conn(epfd, c, strerror(errno));
        return -1;
    }
}

/* Stream: push the current message out and read its echo, as far as the socket allows. */
static void stream_progress(int epfd, struct conn *c) {
    for (;;) {
        while (c->sent < size) {
            ssize_t n = conn_send(epfd, c, msg + c->sent, size - c->sent);
            if (n < 0) return;
            if (n == 0) break;
            c->sent += (size_t)n;
        }
        while (c->recvd < c->sent) {
            size_t want = c->sent - c->recvd;
            if (want > SCRATCH) want = SCRATCH;
            ssize_t n = conn_recv(epfd, c, scratch, want);
            if (n < 0) return;
            if (n == 0) break;
            if (memcmp(scratch, msg + c->recvd, (size_t)n)) {
                kill_conn(epfd, c, "the echo differs from what was sent");
                return;
            }
            c->recvd += (size_t)n;
        }
        if (c->recvd < size) return;  /* wait for the socket (edge-triggered: both ways) */
        if (measuring) {
            messages++;
            c->done++;
        }
        c->sent = c->recvd = 0;       /* next message, at once */
    }
}

static void udp_send(struct conn *c) {
    c->seq++;
    memcpy(msg, &c->seq, sizeof c->seq);
    c->sent_at = now_ns();
    /* A failed send (buffer full, refused) is a datagram lost: the timeout resends. */
    send(c->fd, msg, size, MSG_NOSIGNAL);
}

static void udp_readable(struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, scratch, SCRATCH, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  /* EAGAIN, or ECONNREFUSED (the timeout deals with it) */
        }
        uint64_t seq;
        if ((size_t)n != size) continue;
        memcpy(&seq, scratch, sizeof seq);
        if (seq != c->seq) continue;  /* the late echo of a lost datagram */
        memcpy(msg, &c->seq, sizeof c->seq);
        if (memcmp(scratch, msg, size)) {
            errors++;
        } else if (measuring) {
            messages++;
            c->done++;
        }
        udp_send(c);
    }
}

int main(int argc, char **argv) {
    struct target t = {.transport = T_NONE};
    int nconns = 10;
    double duration = 2.0, warmup = 0.5;
    long timeout_ms = 200;
    const char *ca_file = NULL, *hostname = "localhost";
    int use_tls = 0;
    size = 1024;

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *opt = argv[i], *value = argv[++i];
        if (!strcmp(opt, "--tls")) {
            parse_target("--tcp", value, &t);
            use_tls = 1;
            continue;
        }
        if (parse_target(opt, value, &t)) continue;
        if (!strcmp(opt, "--ca")) ca_file = value;
        else if (!strcmp(opt, "--hostname")) hostname = value;
        else
        if (!strcmp(opt, "--connections")) nconns = atoi(value);
        else if (!strcmp(opt, "--size")) size = strtoull(value, NULL, 10);
        else if (!strcmp(opt, "--duration")) duration = atof(value);
        else if (!strcmp(opt, "--warmup")) warmup = atof(value);
        else if (!strcmp(opt, "--timeout")) timeout_ms = atol(value);
        else usage();
    }
    if (t.transport == T_NONE || nconns < 1 || nconns > 100000) usage();
    if (use_tls && !ca_file) usage();
    SSL_CTX *ctx = use_tls ? tls_context(ca_file) : NULL;
    if (size < 8) size = 8;
    if (size > 64u * 1024 * 1024) size = 64u * 1024 * 1024;
    if (t.transport == T_UDP && size > 65507) {
        fprintf(stderr, "loadgen: UDP datagrams are at most 65507 bytes\n");
        return 2;
    }
    if (duration <= 0 || duration > 600) duration = 600;
    if (warmup < 0 || warmup > 600) warmup = 0;
    raise_nofile();

    msg = malloc(size);
    scratch = malloc(SCRATCH);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (!msg || !scratch || !conns) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < size; i++) msg[i] = (unsigned char)(i * 13 + 5);

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_target(&t, use_tls ? 0 : SOCK_NONBLOCK);
        if (c->fd >= 0 && use_tls) {
            c->tls = tls_connect(ctx, c->fd, hostname);
            if (!c->tls || fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) {
                close(c->fd);
                c->dead = 1;
                errors++;
                continue;
            }
        }
        if (c->fd < 0) {
            fprintf(stderr, "loadgen: cannot connect to %s %s: %s\n", transport_name(t.transport),
                    t.text, strerror(errno));
            c->dead = 1;
            errors++;
            continue;
        }
        alive++;
        uint32_t events = t.transport == T_UDP ? EPOLLIN : EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        struct epoll_event ev = {.events = events, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    }
    if (!alive) return 1;

    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t end = measure_from + (uint64_t)(duration * 1e9);
    uint64_t timeout_ns = (uint64_t)timeout_ms * 1000000ull;
    measuring = warmup <= 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].dead) continue;
        if (t.transport == T_UDP) udp_send(&conns[i]);
        else stream_progress(epfd, &conns[i]);
    }

    struct epoll_event events[256];
    uint64_t now = start, measured_from = measuring ? start : 0;
    while ((now = now_ns()) < end) {
        if (!measuring && now >= measure_from) {
            measuring = 1;
            measured_from = now;
        }
        uint64_t until = measuring ? end : measure_from;
        int wait_ms = (int)((until - now) / 1000000ull) + 1;
        if (t.transport == T_UDP && wait_ms > 5) wait_ms = 5;  /* to check timeouts */
        int n = epoll_wait(epfd, events, 256, wait_ms);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->dead) continue;
            if (t.transport == T_UDP) udp_readable(c);
            else stream_progress(epfd, c);
        }
        if (t.transport == T_UDP) {
            uint64_t at = now_ns();
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &conns[i];
                if (!c->dead && at - c->sent_at > timeout_ns) {
                    if (measuring) lost++;
                    udp_send(c);
                }
            }
        }
        if (!alive) break;
    }
    now = now_ns();
    double seconds = measured_from && now > measured_from ? (double)(now - measured_from) / 1e9 : 0;
    const char *version = NULL, *cipher = NULL;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].tls && !version) {
            version = SSL_get_version(conns[i].tls);
            cipher = SSL_get_cipher_name(conns[i].tls);
        }
        if (!conns[i].dead) close(conns[i].fd);
    }

    /* Fairness: the least and most served connections (all equal ideally). */
    uint64_t least = UINT64_MAX, most = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].done < least) least = conns[i].done;
        if (conns[i].done > most) most = conns[i].done;
    }
    double rate = seconds > 0 ? (double)messages / seconds : 0;
    printf("{\"transport\":\"%s\",\"size\":%zu,\"connections\":%d,\"seconds\":%.3f,"
           "\"messages\":%llu,\"messages_per_s\":%.1f,\"mb_per_s\":%.3f,\"errors\":%llu,"
           "\"lost\":%llu,\"least_per_connection\":%llu,\"most_per_connection\":%llu",
           use_tls ? "tls" : transport_name(t.transport), size, nconns, seconds, (unsigned long long)messages,
           rate, rate * (double)size / 1e6, (unsigned long long)errors, (unsigned long long)lost,
           (unsigned long long)least, (unsigned long long)most);
    if (use_tls) printf(",\"tls_version\":\"%s\",\"tls_cipher\":\"%s\"", version ? version : "",
                        cipher ? cipher : "");
    printf("}\n");
    return 0;
}
