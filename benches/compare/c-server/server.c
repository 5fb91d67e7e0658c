/*
 * A reference line-echo server in C, for benches/compare: the floor for echod's design.
 *
 * One thread, one epoll set, edge-triggered, every socket registered once for
 * EPOLLIN | EPOLLOUT | EPOLLRDHUP (no epoll_ctl while a connection lives). It speaks the
 * echod protocol (docs/PROTOCOL.md, line mode, defaults only):
 *
 *   - banner "Welcome to the server. Type something and hit enter\n" on accept;
 *   - each line, terminator included, is answered "OK..." + line;
 *   - on the client's half-close, complete lines are answered, then the unterminated
 *     fragment as "OK..." + fragment, then everything is sent and the socket closed;
 *   - a line over 65536 bytes gets "ERR line too long\n" and a close;
 *   - at most 65536 reply bytes are queued per client; past that we stop reading it
 *     (TCP flow control pushes back) until its replies drain.
 *
 * Memory, on purpose "the plain C way": a connection is a malloc'd struct (~64 bytes).
 * Its input buffer (4 KiB, grown up to the line limit if a line is longer) is allocated
 * on its first read and kept for the life of the connection. Replies are built in one
 * shared buffer and written at once; only what the socket does not take is copied into
 * a per-connection output buffer, freed once sent.
 *
 * Syscalls, the idiomatic ones: reads go until a short read (a read that returns less
 * than asked for proves the socket was emptied, as nginx does; with EPOLLRDHUP seen we
 * read on until the EOF), one write per batch of replies, and epoll_wait with up to
 * 1024 events.
 *
 * Usage: server [ADDR:]PORT   (e.g. 127.0.0.1:0). Prints "listening on 127.0.0.1:PORT"
 * to stderr. No timers: with nothing to do it sleeps in epoll_wait forever.
 * Build: cc -O2 -o server server.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BANNER "Welcome to the server. Type something and hit enter\n"
#define PREFIX "OK..."
#define PREFIX_LEN 5
#define ERR_LONG "ERR line too long\n"
#define MAX_LINE 65536
#define MAX_PENDING 65536
#define IN_INITIAL 4096
#define MAX_EVENTS 1024
/* Worst-case expansion of one input buffer: every line is a lone "\n" (1 byte in,
 * PREFIX_LEN + 1 bytes out), plus a final fragment or error. */
#define REPLY_SCRATCH ((MAX_LINE + 1) * (PREFIX_LEN + 1) + 64)

enum { OPEN, FLUSHING };

struct conn {
    int fd;
    uint8_t state;      /* OPEN, or FLUSHING: input is over, close once output is sent */
    uint8_t can_read;   /* the socket may hold unread bytes (edge not used up) */
    uint8_t can_write;  /* the socket may take more bytes */
    uint8_t rdhup;      /* the peer's FIN was reported: read until EOF */
    uint32_t in_len, in_cap;
    uint32_t out_off, out_len, out_cap;
    char *in;           /* partial line; allocated on first read, then kept */
    char *out;          /* replies the socket did not take yet; freed once sent */
};

static char *reply;       /* shared reply scratch */
static int epfd, lfd;
static int accept_paused; /* EMFILE: retry accepting on the next close / in 250 ms */

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void conn_close(struct conn *c) {
    close(c->fd); /* also removes it from the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

/* Queue bytes behind output the socket has not taken yet. */
static void queue(struct conn *c, const char *data, size_t len) {
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + len) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) die("realloc");
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* Send `data` (fresh replies, in order after any queued output). Returns -1 on error. */
static int send_bytes(struct conn *c, const char *data, size_t len) {
    if (c->out_len > c->out_off || !c->can_write) {
        queue(c, data, len);
        return 0;
    }
    while (len > 0) {
        ssize_t n = write(c->fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { c->can_write = 0; break; }
            return -1;
        }
        data += n;
        len -= (size_t)n;
        if (len > 0) { c->can_write = 0; break; } /* short write: the buffer is full */
    }
    if (len > 0) queue(c, data, len);
    return 0;
}

/* Write queued output. Returns -1 on error. */
static int flush_out(struct conn *c) {
    while (c->can_write && c->out_len > c->out_off) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { c->can_write = 0; break; }
            return -1;
        }
        c->out_off += (uint32_t)n;
        if (c->out_off < c->out_len) c->can_write = 0;
    }
    if (c->out_len == c->out_off && c->out) {
        free(c->out);
        c->out = NULL;
        c->out_off = c->out_len = c->out_cap = 0;
    }
    return 0;
}

static uint32_t pending(const struct conn *c) { return c->out_len - c->out_off; }

/* Answer every complete line in c->in; keep the fragment. With `eof`, answer the
 * fragment too and go to FLUSHING. Returns -1 on error. */
static int answer(struct conn *c, int eof) {
    size_t r = 0, start = 0;
    char *nl;
    while ((nl = memchr(c->in + start, '\n', c->in_len - start)) != NULL) {
        size_t len = (size_t)(nl - (c->in + start)) + 1;
        memcpy(reply + r, PREFIX, PREFIX_LEN);
        memcpy(reply + r + PREFIX_LEN, c->in + start, len);
        r += PREFIX_LEN + len;
        start += len;
    }
    size_t rest = c->in_len - start;
    if (rest > MAX_LINE) {
        memcpy(reply + r, ERR_LONG, sizeof ERR_LONG - 1);
        r += sizeof ERR_LONG - 1;
        c->state = FLUSHING;
        rest = 0;
    } else if (eof && rest > 0) {
        memcpy(reply + r, PREFIX, PREFIX_LEN);
        memcpy(reply + r + PREFIX_LEN, c->in + start, rest);
        r += PREFIX_LEN + rest;
        rest = 0;
    }
    if (eof) c->state = FLUSHING;
    if (rest > 0 && start > 0) memmove(c->in, c->in + start, rest);
    c->in_len = (uint32_t)rest;
    return r ? send_bytes(c, reply, r) : 0;
}

/* Read what the socket has (while output room allows) and answer it. -1: close now. */
static int on_readable(struct conn *c) {
    while (c->state == OPEN && c->can_read && pending(c) < MAX_PENDING) {
        if (!c->in) {
            c->in = malloc(IN_INITIAL);
            if (!c->in) die("malloc");
            c->in_cap = IN_INITIAL;
        }
        if (c->in_len == c->in_cap) { /* a long line: grow up to the limit */
            uint32_t cap = c->in_cap * 2;
            if (cap > MAX_LINE + 1) cap = MAX_LINE + 1;
            char *p = realloc(c->in, cap);
            if (!p) die("realloc");
            c->in = p;
            c->in_cap = cap;
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { c->can_read = 0; break; }
            return -1;
        }
        if (n == 0) {
            c->can_read = 0;
            if (answer(c, 1) < 0) return -1;
            break;
        }
        if ((size_t)n < room && !c->rdhup) c->can_read = 0;
        c->in_len += (uint32_t)n;
        if (c->in_len == c->in_cap && c->in_cap == MAX_LINE + 1 &&
            !memchr(c->in, '\n', c->in_len)) {
            c->in_len = MAX_LINE + 1; /* answer() turns this into the error */
        }
        if (answer(c, 0) < 0) return -1;
    }
    return 0;
}

/* Everything a readiness change allows; returns -1 when the connection must close. */
static int drive(struct conn *c) {
    for (;;) {
        if (on_readable(c) < 0) return -1;
        if (flush_out(c) < 0) return -1;
        if (c->state == FLUSHING) return pending(c) == 0 ? -1 : 0;
        /* Writing may have made room for input that is still waiting. */
        if (!(c->can_read && pending(c) < MAX_PENDING)) return 0;
    }
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                if (!accept_paused) fprintf(stderr, "out of file descriptors\n");
                accept_paused = 1;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->state = OPEN;
        c->can_write = 1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        if (send_bytes(c, BANNER, sizeof BANNER - 1) < 0) conn_close(c);
    }
}

static int parse_addr(const char *arg, struct sockaddr_in *sa) {
    char host[64] = "127.0.0.1";
    const char *colon = strrchr(arg, ':');
    const char *port = arg;
    if (colon) {
        size_t n = (size_t)(colon - arg);
        if (n >= sizeof host) return -1;
        memcpy(host, arg, n);
        host[n] = 0;
        port = colon + 1;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(port));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa;
    if (argc != 2 || parse_addr(argv[1], &sa) < 0) {
        fprintf(stderr, "usage: %s [IPV4:]PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    reply = malloc(REPLY_SCRATCH);
    if (!reply) die("malloc");

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    socklen_t len = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    fprintf(stderr, "listening on %s:%u\n", host, ntohs(sa.sin_port));

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");

    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, accept_paused ? 250 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (n == 0 && accept_paused) {
            accept_paused = 0;
            accept_all();
        }
        int closed = 0;
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                accept_all();
                continue;
            }
            uint32_t e = events[i].events;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->can_read = 1;
            if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->rdhup = 1;
            if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->can_write = 1;
            if (drive(c) < 0) {
                /* Closing frees the struct; a later event for it in this same batch
                 * is impossible: close() removes the fd from the set, and epoll
                 * reports each fd at most once per epoll_wait. */
                conn_close(c);
                closed = 1;
            }
        }
        if (closed && accept_paused) {
            accept_paused = 0;
            accept_all();
        }
    }
}
