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
 *   zmqbench pubsub   PUB_EPS SUB_EPS SUBSCRIBERS COUNT SIZE [PROCS]
 *
 * pubsub without PROCS runs each subscriber in a thread of this process (64 at most); with
 * PROCS it forks that many subscriber processes, each running its share of the subscribers
 * (one thread each) on a context of its own, so a large fan-out is not bounded by one client
 * process's I/O threads (or by libzmq's sockets per context).
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
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEADLINE_MS 20000
/* Subscribers connecting and seeing their first message (1000 of them on a busy machine). */
#define WARMUP_MS 60000
/* A subscriber that has seen nothing for this long after the warm-up ends its run (its end
 * marker may have been dropped); 1000 subscribers on one busy I/O thread can wait seconds. */
#define QUIET_MS 5000

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
    /* libzmq listens with a backlog of 100 and zmq-proxy with more: the same for both, so 1000
     * subscribers connecting at once do not meet SYN retries at libzmq's proxy only. */
    int backlog = 1024;
    zmq_setsockopt(s, ZMQ_BACKLOG, &backlog, sizeof backlog);
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
    int quiet = QUIET_MS;
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &quiet, sizeof quiet);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    char *buf = malloc(s->size + 2);
    int warm = 0;
    double deadline = now_s() + WARMUP_MS / 1000.0;
    while (now_s() < deadline) {
        int n = zmq_recv(sub, buf, s->size + 2, 0);
        if (n < 0) {
            if (warm) break; /* quiet after traffic: the run is over */
            continue;
        }
        if (n == 1 && buf[0] == 'w') {
            if (!warm) {
                __atomic_add_fetch(&subs_ready, 1, __ATOMIC_ACQ_REL);
                /* The run's deadline starts once the subscriber is in: 1000 of them on a busy
                 * machine can take longer than one deadline to connect. */
                deadline = now_s() + DEADLINE_MS / 1000.0;
            }
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

/* The context of this process: ZMQBENCH_IO_THREADS I/O threads. */
static void *new_ctx(void) {
    void *c = zmq_ctx_new();
    if (!c) die("zmq_ctx_new");
    const char *io_threads = getenv("ZMQBENCH_IO_THREADS");
    if (io_threads && zmq_ctx_set(c, ZMQ_IO_THREADS, atoi(io_threads)) != 0) die("ZMQ_IO_THREADS");
    if (zmq_ctx_set(c, ZMQ_MAX_SOCKETS, 4096) != 0) die("ZMQ_MAX_SOCKETS");
    return c;
}

/* What one subscriber process reports through the result pipe (one write, below PIPE_BUF). */
struct tally { long received; double last; };

/* A subscriber process: n subscriber threads on a context of its own. It writes one byte to
 * ready_fd once every one of them has seen a warm-up message, and its tally to result_fd once
 * they have all ended. */
static void sub_process(const char *eps, int n, size_t size, int ready_fd, int result_fd) {
    ctx = new_ctx();
    struct sub *s = calloc(n, sizeof *s);
    pthread_t *t = calloc(n, sizeof *t);
    for (int i = 0; i < n; i++) {
        s[i] = (struct sub){eps, size, 0, 0, 0};
        if (pthread_create(&t[i], NULL, subscriber, &s[i]) != 0) die("pthread_create");
    }
    double deadline = now_s() + WARMUP_MS / 1000.0;
    struct timespec pause = {0, 1000000};
    while (__atomic_load_n(&subs_ready, __ATOMIC_ACQUIRE) < n && now_s() < deadline)
        nanosleep(&pause, NULL);
    if (subs_ready == n && write(ready_fd, "r", 1) != 1) die("ready pipe");
    struct tally r = {0, 0};
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        r.received += s[i].received;
        if (s[i].last > r.last) r.last = s[i].last;
    }
    if (write(result_fd, &r, sizeof r) != (ssize_t)sizeof r) die("result pipe");
}

/* Forks procs subscriber processes sharing subs subscribers; returns the read ends of the
 * ready and result pipes. */
static void fork_subscribers(const char *eps, int subs, int procs, size_t size, int *ready_rd,
                             int *result_rd) {
    int ready[2], result[2];
    if (pipe(ready) != 0 || pipe(result) != 0) die("pipe");
    fflush(stdout);
    for (int p = 0; p < procs; p++) {
        int n = subs / procs + (p < subs % procs);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            close(ready[0]);
            close(result[0]);
            sub_process(eps, n, size, ready[1], result[1]);
            _exit(0);
        }
    }
    close(ready[1]);
    close(result[1]);
    fcntl(ready[0], F_SETFL, O_NONBLOCK);
    *ready_rd = ready[0];
    *result_rd = result[0];
}

static int run_pubsub(char **a, int procs) {
    int subs = atoi(a[2]);
    long count = strtol(a[3], NULL, 10);
    size_t size = strtoul(a[4], NULL, 10);
    if (procs < 0 || (procs == 0 && subs > 64) || procs > subs) return 2;
    int ready_rd = -1, result_rd = -1;
    if (procs > 0) fork_subscribers(a[1], subs, procs, size, &ready_rd, &result_rd);
    ctx = new_ctx();
    /* Clients never drop (HWM 0 = unlimited; set before connecting), so loss measures the device. */
    void *pub = open_socket_hwm(ZMQ_PUB, a[0], -1, 0);
    int linger = DEADLINE_MS;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    struct sub s[64];
    pthread_t t[64];
    for (int i = 0; i < subs && procs == 0; i++) {
        s[i] = (struct sub){a[1], size, 0, 0, 0};
        pthread_create(&t[i], NULL, subscriber, &s[i]);
    }
    /* Subscriber processes report readiness as a process, not per subscriber. */
    long ready_target = procs > 0 ? procs : subs;
    /* Subscriptions propagate asynchronously (slow joiner): publish warm-up messages until every
     * subscriber has seen one, bounded by the deadline. */
    double deadline = now_s() + WARMUP_MS / 1000.0;
    struct timespec pause = {0, 1000000};
    while (__atomic_load_n(&subs_ready, __ATOMIC_ACQUIRE) < ready_target && now_s() < deadline) {
        zmq_send(pub, "w", 1, ZMQ_DONTWAIT);
        nanosleep(&pause, NULL);
        char r[64];
        ssize_t got = procs > 0 ? read(ready_rd, r, sizeof r) : 0;
        if (got > 0) subs_ready += got;
    }
    if (subs_ready < ready_target) {
        fprintf(stderr, "zmqbench: %ld of %ld subscriber groups ready\n", subs_ready, ready_target);
        die("pubsub warm-up");
    }
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
    for (int i = 0; i < subs && procs == 0; i++) {
        pthread_join(t[i], NULL);
        total += s[i].received;
        if (s[i].last > last) last = s[i].last;
    }
    int reported = 0;
    for (struct tally r; procs > 0 && reported < procs; reported++) {
        /* Each tally is one write below PIPE_BUF, so it arrives whole; EOF: a process died. */
        if (read(result_rd, &r, sizeof r) != (ssize_t)sizeof r) break;
        total += r.received;
        if (r.last > last) last = r.last;
    }
    for (int p = 0; p < procs; p++) wait(NULL);
    if (procs > 0 && reported < procs) die("a subscriber process failed");
    double secs = last - start;
    printf("{\"sent\":%ld,\"received\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"loss\":%.4f}\n",
           count * subs, total, secs, secs > 0 ? total / secs : 0,
           1.0 - (double)total / (double)(count * subs));
    free(payload);
    zmq_close(pub);
    return 0;
}

int main(int argc, char **argv) {
    /* pubsub makes its own after forking any subscriber processes. */
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "pubsub") == 0)
        return run_pubsub(argv + 2, argc == 8 ? atoi(argv[7]) : 0);
    ctx = new_ctx();
    if (argc == 6 && strcmp(argv[1], "proxy") == 0) return run_proxy(argv + 2);
    if (argc == 6 && strcmp(argv[1], "pipeline") == 0) return run_pipeline(argv + 2);
    if (argc == 8 && strcmp(argv[1], "reqrep") == 0) return run_reqrep(argv + 2);
    fprintf(stderr, "usage: see the comment at the top of zmqbench.c\n");
    return 2;
}
