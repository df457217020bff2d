/*
 * pollkit's load generator in C, for when a Python one would be the bottleneck.
 *
 * The same closed loop as the load generator of pollkit/bench/echo.py, with the
 * same arguments and JSON output: N connections, each sending one SIZE-byte
 * message and reading every byte of its echo before sending the next.  The
 * server's CPU time is read from /proc at the edges of the measured window.
 * Built on first use by benchmarks/run_all.py with the system C compiler; the
 * Python generator is used where there is none.
 *
 * usage: loadgen HOST PORT CONNECTIONS SIZE WARMUP DURATION PIDS CPU
 *   PIDS: comma-separated server pids whose CPU time is summed ("-": none)
 *   CPU:  the CPU to pin this process to (-1: no pinning)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PIDS 256

struct conn {
    int fd;
    long received;   /* bytes of the current echo read so far */
    long sent;       /* bytes of the current message sent so far */
    long long sent_at;
    long completed;
};

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fail_msg(const char *what) {
    fprintf(stderr, "loadgen: %s\n", what);
    exit(1);
}

/* Nanoseconds on CPU of every live thread of pid; -1 if unknown. */
static long long schedstat_ns(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    long long total = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char file[320];
        snprintf(file, sizeof file, "/proc/%d/task/%s/schedstat", pid, entry->d_name);
        FILE *f = fopen(file, "r");
        if (!f) continue;
        long long ns;
        if (fscanf(f, "%lld", &ns) == 1) total += ns;
        fclose(f);
    }
    closedir(dir);
    return total;
}

/* utime + stime of pid in clock ticks; -1 if unknown. */
static long long stat_ticks(int pid) {
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    if (!p) return -1;
    p += 2;
    /* fields after the name: state is the 1st, utime the 12th, stime the 13th */
    for (int field = 1; field < 12; field++) {
        p = strchr(p, ' ');
        if (!p) return -1;
        p++;
    }
    long long utime, stime;
    if (sscanf(p, "%lld %lld", &utime, &stime) != 2) return -1;
    return utime + stime;
}

static void server_cpu(const int *pids, int npids, long long *ns, long long *ticks) {
    *ns = 0;
    *ticks = 0;
    for (int i = 0; i < npids; i++) {
        long long a = schedstat_ns(pids[i]), b = stat_ticks(pids[i]);
        *ns = (a < 0 || *ns < 0) ? -1 : *ns + a;
        *ticks = (b < 0 || *ticks < 0) ? -1 : *ticks + b;
    }
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between closest ranks, as pollkit.bench.stats.percentile. */
static double percentile(const long long *sorted, long n, double fraction) {
    double position = fraction * (double)(n - 1);
    long low = (long)position;
    long high = low + 1 < n ? low + 1 : n - 1;
    double weight = position - (double)low;
    return (double)sorted[low] * (1.0 - weight) + (double)sorted[high] * weight;
}

static int connect_one(const struct addrinfo *ai) {
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) fail("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_some(int epfd, struct conn *c, const char *payload, long size, int index) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, payload + c->sent, (size_t)(size - c->sent), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            fail("send");
        }
        c->sent += n;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->sent < size ? EPOLLOUT : 0)};
    ev.data.u32 = (unsigned)index;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) fail("epoll_ctl");
}

int main(int argc, char **argv) {
    if (argc != 9) fail_msg("usage: loadgen HOST PORT CONNECTIONS SIZE WARMUP DURATION PIDS CPU");
    const char *host = argv[1], *port = argv[2];
    long connections = atol(argv[3]), size = atol(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    int pids[MAX_PIDS], npids = 0, cpu = atoi(argv[8]);
    if (connections < 1 || size < 1 || warmup < 0 || duration <= 0) fail_msg("bad arguments");
    if (strcmp(argv[7], "-") != 0) {
        for (char *p = argv[7]; *p && npids < MAX_PIDS;) {
            pids[npids++] = (int)strtol(p, &p, 10);
            if (*p == ',') p++;
        }
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set); /* not allowed: run unpinned */
    }
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < (rlim_t)connections + 64) {
        limit.rlim_cur = (rlim_t)connections + 64;
        if (limit.rlim_cur > limit.rlim_max) fail_msg("RLIMIT_NOFILE hard limit too low");
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0) fail("setrlimit");
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0) fail_msg("cannot resolve host");

    struct conn *conns = calloc((size_t)connections, sizeof *conns);
    char *payload = malloc((size_t)size);
    long bufsize = size > 65536 ? size : 65536;
    char *buffer = malloc((size_t)bufsize);
    if (!conns || !payload || !buffer) fail_msg("out of memory");
    for (long i = 0; i < size; i++) payload[i] = (char)(i & 0xff);

    /* Batches proven served by a one-byte echo, so the accept backlog never overflows. */
    for (long i = 0; i < connections; i += BATCH) {
        long end = i + BATCH < connections ? i + BATCH : connections;
        for (long j = i; j < end; j++) {
            conns[j].fd = connect_one(ai);
            if (send(conns[j].fd, "!", 1, MSG_NOSIGNAL) != 1) fail("send");
        }
        for (long j = i; j < end; j++) {
            char byte;
            if (recv(conns[j].fd, &byte, 1, 0) != 1 || byte != '!') fail_msg("no echo of the ping");
            fcntl(conns[j].fd, F_SETFL, fcntl(conns[j].fd, F_GETFL) | O_NONBLOCK);
        }
    }
    freeaddrinfo(ai);

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1");
    for (long i = 0; i < connections; i++) {
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.u32 = (unsigned)i;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) fail("epoll_ctl");
    }
    long capacity = 1 << 16, messages = 0;
    long long *latencies = malloc((size_t)capacity * sizeof *latencies);
    if (!latencies) fail_msg("out of memory");
    struct epoll_event events[1024];

    long long start = now_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < connections; i++) {
        conns[i].sent_at = start;
        send_some(epfd, &conns[i], payload, size, (int)i);
    }
    long long window_start = start + (long long)(warmup * 1e9), window_end = 0;
    long long cpu_ns_before = 0, ticks_before = 0, own_before = 0, now = start;
    int measuring = 0;
    for (;;) {
        now = now_ns(CLOCK_MONOTONIC);
        if (!measuring && now >= window_start) {
            server_cpu(pids, npids, &cpu_ns_before, &ticks_before);
            own_before = now_ns(CLOCK_PROCESS_CPUTIME_ID);
            window_start = now = now_ns(CLOCK_MONOTONIC);
            window_end = now + (long long)(duration * 1e9);
            for (long i = 0; i < connections; i++) conns[i].completed = 0;
            measuring = 1;
        } else if (measuring && now >= window_end) {
            break;
        }
        int ready = epoll_wait(epfd, events, 1024, 50);
        if (ready < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int e = 0; e < ready; e++) {
            int index = (int)events[e].data.u32;
            struct conn *c = &conns[index];
            if (events[e].events & EPOLLOUT) send_some(epfd, c, payload, size, index);
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t n = recv(c->fd, buffer, (size_t)bufsize, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                fail("recv");
            }
            if (n == 0) fail_msg("the server closed a connection mid-benchmark");
            c->received += n;
            if (c->received < size) continue;
            if (c->received > size) fail_msg("the server echoed more than it was sent");
            long long finished = now_ns(CLOCK_MONOTONIC);
            if (measuring) {
                if (messages == capacity) {
                    capacity *= 2;
                    latencies = realloc(latencies, (size_t)capacity * sizeof *latencies);
                    if (!latencies) fail_msg("out of memory");
                }
                latencies[messages++] = finished - c->sent_at;
                c->completed++;
            }
            c->received = 0;
            c->sent = 0;
            c->sent_at = finished;
            /* Fast path: the whole message goes at once, no epoll_ctl. */
            ssize_t sent = send(c->fd, payload, (size_t)size, MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno != EAGAIN && errno != EINTR) fail("send");
                sent = 0;
            }
            c->sent = sent;
            if (c->sent < size) send_some(epfd, c, payload, size, index);
        }
    }
    long long cpu_ns_after, ticks_after;
    server_cpu(pids, npids, &cpu_ns_after, &ticks_after);
    long long own = now_ns(CLOCK_PROCESS_CPUTIME_ID) - own_before;
    double seconds = (double)(now - window_start) / 1e9;
    long idle = 0;
    for (long i = 0; i < connections; i++) idle += conns[i].completed == 0;
    qsort(latencies, (size_t)messages, sizeof *latencies, compare);
    long ticks_per_second = sysconf(_SC_CLK_TCK);

    printf("{\"connections\": %ld, \"server_processes\": %d, \"size\": %ld, \"messages\": %ld, "
           "\"seconds\": %.9f, \"messages_per_second\": %.3f, ",
           connections, npids, size, messages, seconds, seconds > 0 ? messages / seconds : 0.0);
    if (messages)
        printf("\"latency_ns\": {\"p50\": %.1f, \"p99\": %.1f, \"max\": %lld}, ",
               percentile(latencies, messages, 0.5), percentile(latencies, messages, 0.99),
               latencies[messages - 1]);
    else
        printf("\"latency_ns\": {\"p50\": null, \"p99\": null, \"max\": null}, ");
    printf("\"idle_connections\": %ld, ", idle);
    int have_ns = npids && cpu_ns_before >= 0 && cpu_ns_after >= 0;
    int have_ticks = npids && ticks_before >= 0 && ticks_after >= 0;
    long long dns = cpu_ns_after - cpu_ns_before;
    double dstat = (double)(ticks_after - ticks_before) / (double)ticks_per_second;
    if (have_ns) printf("\"server_cpu_ns\": %lld, ", dns);
    else printf("\"server_cpu_ns\": null, ");
    if (have_ticks) printf("\"server_cpu_stat_seconds\": %.4f, ", dstat);
    else printf("\"server_cpu_stat_seconds\": null, ");
    if (have_ns && messages && dns > 0) printf("\"server_cpu_ns_per_message\": %.3f, ", (double)dns / messages);
    else printf("\"server_cpu_ns_per_message\": null, ");
    if (have_ticks && messages) printf("\"server_cpu_stat_ns_per_message\": %.3f, ", dstat * 1e9 / messages);
    else printf("\"server_cpu_stat_ns_per_message\": null, ");
    if (have_ns && seconds > 0 && dns > 0) printf("\"server_utilisation\": %.4f, ", dns / 1e9 / seconds);
    else printf("\"server_utilisation\": null, ");
    printf("\"client_utilisation\": %.4f, \"generator\": \"c\"}\n", seconds > 0 ? own / 1e9 / seconds : 0.0);
    return 0;
}
