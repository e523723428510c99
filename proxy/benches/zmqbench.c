/* Load generator and reference proxy for the side-by-side benchmark, on the system libzmq.
 *
 * Every scenario is driven by the same libzmq clients whatever sits in the middle (libzmq's own
 * zmq_proxy, zmq-proxy, or nothing), so the ratios compare proxies and not load generators.
 * Endpoints are written "@tcp://..." to bind and ">tcp://..." to connect, comma-separated.
 * Results go to stdout as one JSON object; every wait has a deadline so a stuck run ends.
 *
 *   zmqbench proxy    FRONT_TYPE FRONT_EP BACK_TYPE BACK_EP
 *   zmqbench pipeline PUSH_EPS PULL_EPS SIZE COUNT
 *   zmqbench reqrep   CLIENT_EPS WORKER_EPS CLIENTS WORKERS COUNT_PER_CLIENT SIZE
 *   zmqbench pubsub   PUB_EPS SUB_EPS SUBSCRIBERS COUNT SIZE
 *
 * With ZMQBENCH_CURVE_SERVER_PUBLIC/_SECRET and ZMQBENCH_CURVE_CLIENT_PUBLIC/_SECRET set (Z85),
 * every socket is CURVE: a socket that binds is a CURVE server, one that connects a client of
 * that server. The proxy mode then runs libzmq's zmq_proxy with CURVE on both sides.
 *
 * ZMQBENCH_IO_THREADS sets the context's I/O threads (default 1, libzmq's). libzmq encodes,
 * decodes and (with CURVE) seals and opens in the I/O threads, so a client process with one
 * carrying many connections can be slower than the device it measures.
 */
#include <zmq.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEADLINE_MS 20000

static void *ctx;

static void die(const char *what) {
    fprintf(stderr, "zmqbench: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Attach sock to every endpoint of a comma list; with index >= 0 only the index-th bind endpoint
 * is used for '@' entries (so workers of a brokerless run each bind their own port). */
static void attach(void *sock, const char *list, int index) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    int i = 0;
    for (char *save = NULL, *ep = strtok_r(buf, ",", &save); ep; ep = strtok_r(NULL, ",", &save), i++) {
        if (ep[0] == '@') {
            if (index < 0 || index == i)
                if (zmq_bind(sock, ep + 1) != 0) die(ep);
        } else if (ep[0] == '>') {
            if (zmq_connect(sock, ep + 1) != 0) die(ep);
        } else {
            fprintf(stderr, "zmqbench: endpoint %s must start with @ or >\n", ep);
            exit(2);
        }
    }
}

/* CURVE options from the environment (see the header), before the socket binds or connects. */
static void curve_options(void *s, const char *list) {
    const char *spub = getenv("ZMQBENCH_CURVE_SERVER_PUBLIC");
    const char *ssec = getenv("ZMQBENCH_CURVE_SERVER_SECRET");
    const char *cpub = getenv("ZMQBENCH_CURVE_CLIENT_PUBLIC");
    const char *csec = getenv("ZMQBENCH_CURVE_CLIENT_SECRET");
    if (!spub || !ssec || !cpub || !csec) return;
    if (list[0] == '@') {
        int on = 1;
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &on, sizeof on) != 0) die("ZMQ_CURVE_SERVER");
        if (zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, ssec, 40) != 0) die("ZMQ_CURVE_SECRETKEY");
    } else {
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spub, 40) != 0) die("ZMQ_CURVE_SERVERKEY");
        if (zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpub, 40) != 0) die("ZMQ_CURVE_PUBLICKEY");
        if (zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csec, 40) != 0) die("ZMQ_CURVE_SECRETKEY");
    }
}

/* hwm >= 0 sets both high-water marks before attaching (they only apply to later connections). */
static void *open_socket_hwm(int type, const char *list, int index, int hwm) {
    void *s = zmq_socket(ctx, type);
    if (!s) die("zmq_socket");
    if (hwm >= 0) {
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    int linger = 0, timeout = DEADLINE_MS;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    curve_options(s, list);
    attach(s, list, index);
    return s;
}

static void *open_socket(int type, const char *list, int index) {
    return open_socket_hwm(type, list, index, -1);
}

static int type_of(const char *name) {
    static const struct { const char *n; int t; } types[] = {
        {"ROUTER", ZMQ_ROUTER}, {"DEALER", ZMQ_DEALER}, {"XSUB", ZMQ_XSUB}, {"XPUB", ZMQ_XPUB},
        {"SUB", ZMQ_SUB}, {"PUB", ZMQ_PUB}, {"PULL", ZMQ_PULL}, {"PUSH", ZMQ_PUSH}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].n, name) == 0) return types[i].t;
    fprintf(stderr, "zmqbench: unknown socket type %s\n", name);
    exit(2);
}

/* ---------------------------------------------------------------- reference proxy */
static int run_proxy(char **a) {
    void *front = open_socket(type_of(a[0]), a[1], -1);
    void *back = open_socket(type_of(a[2]), a[3], -1);
    int forever = -1;
    zmq_setsockopt(front, ZMQ_RCVTIMEO, &forever, sizeof forever);
    zmq_setsockopt(back, ZMQ_RCVTIMEO, &forever, sizeof forever);
    zmq_setsockopt(front, ZMQ_SNDTIMEO, &forever, sizeof forever);
    zmq_setsockopt(back, ZMQ_SNDTIMEO, &forever, sizeof forever);
    if (type_of(a[0]) == ZMQ_SUB) zmq_setsockopt(front, ZMQ_SUBSCRIBE, "", 0);
    if (type_of(a[2]) == ZMQ_SUB) zmq_setsockopt(back, ZMQ_SUBSCRIBE, "", 0);
    printf("ready\n");
    fflush(stdout);
    zmq_proxy(front, back, NULL); /* runs until the process is signalled */
    return 0;
}

/* ---------------------------------------------------------------- pipeline */
struct pipeline { void *push; size_t size; long count; };

static void *pipeline_producer(void *arg) {
    struct pipeline *p = arg;
    char *payload = calloc(1, p->size + 1);
    for (long i = 0; i < p->count; i++)
        if (zmq_send(p->push, payload, p->size, 0) < 0) die("pipeline send");
    free(payload);
    return NULL;
}

static int run_pipeline(char **a) {
    size_t size = strtoul(a[2], NULL, 10);
    long count = strtol(a[3], NULL, 10);
    void *pull = open_socket(ZMQ_PULL, a[1], -1);
    /* Warm up: one message end to end before the clock starts, so connection setup is not timed.
     * The same socket then produces (handed to the thread; pthread_create is the barrier). */
    void *push = open_socket(ZMQ_PUSH, a[0], -1);
    char buf[1];
    if (zmq_send(push, "w", 1, 0) < 0 || zmq_recv(pull, buf, 1, 0) < 0) die("pipeline warm-up");

    struct pipeline p = {push, size, count};
    pthread_t t;
    double start = now_s();
    pthread_create(&t, NULL, pipeline_producer, &p);
    char *rbuf = malloc(size + 1);
    long got = 0;
    for (; got < count; got++)
        if (zmq_recv(pull, rbuf, size + 1, 0) < 0) break;
    double secs = now_s() - start;
    pthread_join(t, NULL);
    printf("{\"sent\":%ld,\"received\":%ld,\"seconds\":%.6f,\"rate\":%.1f}\n", count, got, secs,
           got / secs);
    free(rbuf);
    zmq_close(push);
    zmq_close(pull);
    return got == count ? 0 : 1;
}

/* ---------------------------------------------------------------- request/reply */
struct reqrep { const char *eps; int index; long count; size_t size; uint64_t *lat; long done; };

static void *rep_worker(void *arg) {
    struct reqrep *w = arg;
    void *rep = open_socket(ZMQ_REP, w->eps, w->index);
    int short_timeout = 500;
    zmq_setsockopt(rep, ZMQ_RCVTIMEO, &short_timeout, sizeof short_timeout);
    char *buf = malloc(w->size + 1);
    double deadline = now_s() + DEADLINE_MS / 1000.0 * 3;
    while (now_s() < deadline) {
        int n = zmq_recv(rep, buf, w->size + 1, 0);
        if (n < 0) {
            if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE)) break;
            continue;
        }
        if (zmq_send(rep, buf, n, 0) < 0) break;
    }
    free(buf);
    zmq_close(rep);
    return NULL;
}

static void *req_client(void *arg) {
    struct reqrep *c = arg;
    void *req = open_socket(ZMQ_REQ, c->eps, -1);
    char *buf = calloc(1, c->size + 1);
    for (long i = 0; i < c->count; i++) {
        uint64_t t0 = now_ns();
        if (zmq_send(req, buf, c->size, 0) < 0 || zmq_recv(req, buf, c->size + 1, 0) < 0) break;
        c->lat[i] = now_ns() - t0;
        c->done = i + 1;
    }
    free(buf);
    zmq_close(req);
    return NULL;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static int run_reqrep(char **a) {
    int clients = atoi(a[2]), workers = atoi(a[3]);
    long count = strtol(a[4], NULL, 10);
    size_t size = strtoul(a[5], NULL, 10);
    struct reqrep w[64], c[64];
    pthread_t wt[64], ct[64];
    if (clients > 64 || workers > 64) return 2;
    for (int i = 0; i < workers; i++) {
        w[i] = (struct reqrep){a[1], i, 0, size, NULL, 0};
        pthread_create(&wt[i], NULL, rep_worker, &w[i]);
    }
    /* Warm up every client's path once before timing. */
    void *probe = open_socket(ZMQ_REQ, a[0], -1);
    char one[1];
    if (zmq_send(probe, "w", 1, 0) < 0 || zmq_recv(probe, one, 1, 0) < 0) die("reqrep warm-up");
    zmq_close(probe);
    uint64_t *lat = calloc(clients * count, sizeof *lat);
    double start = now_s();
    for (int i = 0; i < clients; i++) {
        c[i] = (struct reqrep){a[0], -1, count, size, lat + i * count, 0};
        pthread_create(&ct[i], NULL, req_client, &c[i]);
    }
    long total = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ct[i], NULL);
        total += c[i].done;
    }
    double secs = now_s() - start;
    for (int i = 0; i < workers; i++) __atomic_store_n(&w[i].done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < workers; i++) pthread_join(wt[i], NULL);
    /* Only completed requests have latencies; compact them before taking percentiles. */
    long n = 0;
    for (int i = 0; i < clients; i++)
        for (long j = 0; j < c[i].done; j++) lat[n++] = c[i].lat[j];
    qsort(lat, n, sizeof *lat, cmp_u64);
    double p50 = n ? lat[n / 2] / 1e3 : 0, p99 = n ? lat[(long)(n * 0.99)] / 1e3 : 0;
    printf("{\"sent\":%ld,\"received\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f}\n",
           clients * count, total, secs, total / secs, p50, p99);
    free(lat);
    return total == clients * count ? 0 : 1;
}

/* ---------------------------------------------------------------- publish/subscribe */
struct sub { const char *eps; size_t size; long received; double last; long ready; };

static long subs_ready;

static void *subscriber(void *arg) {
    struct sub *s = arg;
    void *sub = open_socket_hwm(ZMQ_SUB, s->eps, -1, 0);
    int quiet = 2000;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &quiet, sizeof quiet);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    char *buf = malloc(s->size + 2);
    int warm = 0;
    double deadline = now_s() + DEADLINE_MS / 1000.0;
    while (now_s() < deadline) {
        int n = zmq_recv(sub, buf, s->size + 2, 0);
        if (n < 0) {
            if (warm) break; /* quiet for 2 s after traffic: the run is over */
            continue;
        }
        if (n == 1 && buf[0] == 'w') {
            if (!warm) __atomic_add_fetch(&subs_ready, 1, __ATOMIC_ACQ_REL);
            warm = 1;
            continue;
        }
        if (n == 1 && buf[0] == 'e') break;
        s->received++;
        s->last = now_s();
    }
    free(buf);
    zmq_close(sub);
    return NULL;
}

static int run_pubsub(char **a) {
    int subs = atoi(a[2]);
    long count = strtol(a[3], NULL, 10);
    size_t size = strtoul(a[4], NULL, 10);
    if (subs > 64) return 2;
    /* Clients never drop (HWM 0 = unlimited; set before connecting), so loss measures the device. */
    void *pub = open_socket_hwm(ZMQ_PUB, a[0], -1, 0);
    int linger = DEADLINE_MS;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    struct sub s[64];
    pthread_t t[64];
    for (int i = 0; i < subs; i++) {
        s[i] = (struct sub){a[1], size, 0, 0, 0};
        pthread_create(&t[i], NULL, subscriber, &s[i]);
    }
    /* Subscriptions propagate asynchronously (slow joiner): publish warm-up messages until every
     * subscriber has seen one, bounded by the deadline. */
    double deadline = now_s() + DEADLINE_MS / 1000.0;
    struct timespec pause = {0, 1000000};
    while (__atomic_load_n(&subs_ready, __ATOMIC_ACQUIRE) < subs && now_s() < deadline) {
        zmq_send(pub, "w", 1, ZMQ_DONTWAIT);
        nanosleep(&pause, NULL);
    }
    if (subs_ready < subs) die("pubsub warm-up");
    char *payload = calloc(1, size + 1);
    memset(payload, 'x', size);
    double start = now_s();
    for (long i = 0; i < count; i++) zmq_send(pub, payload, size, 0);
    for (int i = 0; i < 100; i++) {
        zmq_send(pub, "e", 1, 0);
        nanosleep(&pause, NULL);
    }
    long total = 0;
    double last = start;
    for (int i = 0; i < subs; i++) {
        pthread_join(t[i], NULL);
        total += s[i].received;
        if (s[i].last > last) last = s[i].last;
    }
    double secs = last - start;
    printf("{\"sent\":%ld,\"received\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"loss\":%.4f}\n",
           count * subs, total, secs, secs > 0 ? total / secs : 0,
           1.0 - (double)total / (double)(count * subs));
    free(payload);
    zmq_close(pub);
    return 0;
}

int main(int argc, char **argv) {
    ctx = zmq_ctx_new();
    const char *io_threads = getenv("ZMQBENCH_IO_THREADS");
    if (io_threads && zmq_ctx_set(ctx, ZMQ_IO_THREADS, atoi(io_threads)) != 0) die("ZMQ_IO_THREADS");
    if (argc == 6 && strcmp(argv[1], "proxy") == 0) return run_proxy(argv + 2);
    if (argc == 6 && strcmp(argv[1], "pipeline") == 0) return run_pipeline(argv + 2);
    if (argc == 8 && strcmp(argv[1], "reqrep") == 0) return run_reqrep(argv + 2);
    if (argc == 7 && strcmp(argv[1], "pubsub") == 0) return run_pubsub(argv + 2);
    fprintf(stderr, "usage: see the comment at the top of zmqbench.c\n");
    return 2;
}
