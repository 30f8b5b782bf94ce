/*
 * pingpong: a native latency client, the yardstick for echokit bench's latency probe.
 *
 *   pingpong (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT)
 *            [--size BYTES] [--count N] [--duration SECONDS] [--warmup N] [--timeout MS]
 *
 * One blocking socket, one message of SIZE bytes in flight: send it, read until all of
 * it came back (streams) or its datagram came back (UDP), take the round-trip time with
 * clock_gettime(CLOCK_MONOTONIC), send the next. It stops after N messages or SECONDS,
 * whichever comes first (default: 3 seconds, at most 50 million messages). The first
 * --warmup messages are sent but not recorded.
 *
 * Each message carries its sequence number in its first 8 bytes; the echo is checked
 * byte for byte (a mismatch counts as an error and stops the run). Over UDP a datagram
 * with no echo within --timeout milliseconds (default 1000) is lost; echoes of lost
 * datagrams arriving late are recognised by their number and skipped.
 *
 * Prints one JSON object on stdout:
 *   {"transport":"tcp","size":64,"count":N,"lost":0,"errors":0,"seconds":3.0,
 *    "p50_us":..,"p90_us":..,"p99_us":..,"p99.9_us":..,"max_us":..,"min_us":..,"mean_us":..}
 * Percentiles are nearest-rank over every recorded round trip (no histogram binning).
 */
#include "common.h"

#define MAX_SAMPLES 50000000ull

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *sorted, uint64_t n, double p) {
    if (!n) return 0;
    double exact = p / 100.0 * (double)n;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact) rank++; /* ceil, without libm */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: pingpong (--tcp HOST:PORT | --unix PATH | --udp HOST:PORT) [--size BYTES]\n"
            "                [--count N] [--duration SECONDS] [--warmup N] [--timeout MS]\n");
    exit(2);
}

static int send_all(int fd, const unsigned char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct target t = {.transport = T_NONE};
    size_t size = 64;
    uint64_t count = MAX_SAMPLES, warmup = 0;
    double duration = 3.0;
    long timeout_ms = 1000;

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *opt = argv[i], *value = argv[++i];
        if (parse_target(opt, value, &t)) continue;
        if (!strcmp(opt, "--size")) size = strtoull(value, NULL, 10);
        else if (!strcmp(opt, "--count")) count = strtoull(value, NULL, 10);
        else if (!strcmp(opt, "--duration")) duration = atof(value);
        else if (!strcmp(opt, "--warmup")) warmup = strtoull(value, NULL, 10);
        else if (!strcmp(opt, "--timeout")) timeout_ms = atol(value);
        else usage();
    }
    if (t.transport == T_NONE) usage();
    if (size < 8) size = 8;
    /* Blocking send-then-read is only safe while a message fits in the socket buffers. */
    size_t max_size = t.transport == T_UDP ? 65507 : 65536;
    if (size > max_size) {
        fprintf(stderr, "pingpong: --size at most %zu for %s\n", max_size,
                transport_name(t.transport));
        return 2;
    }
    if (count > MAX_SAMPLES) count = MAX_SAMPLES;
    if (duration <= 0 || duration > 600) duration = 600;

    int fd = connect_target(&t, 0);
    if (fd < 0) {
        fprintf(stderr, "pingpong: cannot connect to %s %s: %s\n", transport_name(t.transport),
                t.text, strerror(errno));
        return 1;
    }
    if (t.transport == T_UDP) {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }

    unsigned char *msg = malloc(size), *back = malloc(size + 1);
    /* Grow the sample array as needed (a duration-bounded run has no known count). */
    uint64_t cap = count < 1u << 20 ? count : 1u << 20, n = 0;
    uint64_t *rtt = malloc(cap * sizeof *rtt);
    if (!msg || !back || !rtt) {
        fprintf(stderr, "pingpong: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < size; i++) msg[i] = (unsigned char)(i * 7 + 1);

    uint64_t lost = 0, errors = 0, seq = 0;
    uint64_t started = now_ns();
    uint64_t deadline = started + (uint64_t)(duration * 1e9);
    while (n < count) {
        uint64_t t0 = now_ns();
        if (t0 >= deadline) break;
        memcpy(msg, &seq, sizeof seq);
        seq++;
        if (send_all(fd, msg, size) < 0) {
            if (t.transport == T_UDP && errno == ECONNREFUSED) {
                lost++;
                continue;
            }
            fprintf(stderr, "pingpong: send: %s\n", strerror(errno));
            errors++;
            break;
        }
        int ok = 1;
        if (t.transport == T_UDP) {
            for (;;) {
                ssize_t got = recv(fd, back, size + 1, 0);
                if (got < 0 && errno == EINTR) continue;
                if (got < 0) {  /* timeout (EAGAIN) or refused: this datagram is lost */
                    lost++;
                    ok = 0;
                    break;
                }
                if ((size_t)got == size && !memcmp(back, msg, sizeof seq)) break;
                /* the late echo of an earlier, lost datagram: skip it */
            }
            if (!ok) continue;
        } else {
            size_t got = 0;
            while (got < size) {
                ssize_t r = recv(fd, back + got, size - got, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) {
                    fprintf(stderr, "pingpong: %s\n",
                            r == 0 ? "the server closed the connection" : strerror(errno));
                    ok = 0;
                    break;
                }
                got += (size_t)r;
            }
            if (!ok) {
                errors++;
                break;
            }
        }
        uint64_t elapsed = now_ns() - t0;
        if (memcmp(back, msg, size)) {
            fprintf(stderr, "pingpong: the echo differs from the message sent\n");
            errors++;
            break;
        }
        if (seq <= warmup) continue;
        if (n == cap) {
            cap *= 2;
            uint64_t *bigger = realloc(rtt, cap * sizeof *rtt);
            if (!bigger) break;
            rtt = bigger;
        }
        rtt[n++] = elapsed;
    }
    double seconds = (double)(now_ns() - started) / 1e9;
    close(fd);

    double sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += (double)rtt[i];
    qsort(rtt, n, sizeof *rtt, cmp_u64);
    printf("{\"transport\":\"%s\",\"size\":%zu,\"count\":%llu,\"lost\":%llu,\"errors\":%llu,"
           "\"seconds\":%.3f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p99.9_us\":%.2f,"
           "\"max_us\":%.2f,\"min_us\":%.2f,\"mean_us\":%.2f}\n",
           transport_name(t.transport), size, (unsigned long long)n, (unsigned long long)lost,
           (unsigned long long)errors, seconds, pct_us(rtt, n, 50), pct_us(rtt, n, 90),
           pct_us(rtt, n, 99), pct_us(rtt, n, 99.9), n ? (double)rtt[n - 1] / 1000.0 : 0.0,
           n ? (double)rtt[0] / 1000.0 : 0.0, n ? sum / (double)n / 1000.0 : 0.0);
    free(rtt);
    free(msg);
    free(back);
    return errors ? 1 : 0;
}
