/*
 * abi_checks: feeds every entry point of the C ABI the bad arguments its
 * header promises to survive, and checks the codes it answers with. Run
 * under valgrind by tests/test_c_abi.py, so a crash, an invalid read or
 * write, or a leak fails the test as surely as a wrong code.
 *
 * Prints one line per failed check and "abi_checks: N checks, M failed";
 * exits 0 only when every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wshub.h"

static int checks;
static int failures;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        checks++;                                                                           \
        if (!(cond)) {                                                                      \
            failures++;                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s (last error %d: %s)\n", __FILE__,     \
                    __LINE__, #cond, wshub_last_error_code(), wshub_last_error());          \
        }                                                                                   \
    } while (0)

/* The call failed with `code` and left a non-empty message. */
#define CHECK_FAILED_WITH(code)                                                             \
    do {                                                                                    \
        CHECK(wshub_last_error_code() == (code));                                           \
        CHECK(wshub_last_error()[0] != '\0');                                               \
    } while (0)

static wshub_options defaults(void) {
    wshub_options opts;
    int rc = wshub_options_default(&opts);
    CHECK(rc == WSHUB_OK);
    return opts;
}

/* wshub_start(opts) must fail with `code` (and return NULL). */
static void start_fails(const wshub_options *opts, int code, int line) {
    wshub_server *hub = wshub_start(opts);
    checks++;
    if (hub != NULL || wshub_last_error_code() != code) {
        failures++;
        fprintf(stderr, "%s:%d: wshub_start: expected code %d, got %s (code %d: %s)\n",
                __FILE__, line, code, hub ? "a hub" : "NULL", wshub_last_error_code(),
                wshub_last_error());
        wshub_stop(hub);
    }
}
#define START_FAILS(opts, code) start_fails((opts), (code), __LINE__)

static void check_last_error_starts_empty(void) {
    CHECK(wshub_last_error() != NULL);
    CHECK(strcmp(wshub_last_error(), "") == 0);
    CHECK(wshub_last_error_code() == WSHUB_OK);
}

static void check_version(void) {
    const char *version = wshub_version();
    CHECK(version != NULL && version[0] != '\0');
}

/*
 * struct_size versions the options: wshub_options_init() writes nothing
 * into a struct of another size, and wshub_start() refuses one, whether it
 * is smaller (an older header), larger (a newer one), zero, or the first
 * field of the layout before struct_size existed (the host pointer).
 */
static void check_struct_size(void) {
    wshub_options opts = defaults();
    CHECK(opts.struct_size == sizeof(wshub_options));

    unsigned char buffer[sizeof(wshub_options) + 64];
    memset(buffer, 0xAB, sizeof buffer);
    const size_t sizes[] = {0, sizeof(void *), sizeof(wshub_options) - sizeof(void *),
                            sizeof(wshub_options) - 1, sizeof(wshub_options) + 1,
                            sizeof(wshub_options) + 64};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        CHECK(wshub_options_init((wshub_options *)(void *)buffer, sizes[i]) ==
              WSHUB_ERR_INVALID_ARGUMENT);
        CHECK_FAILED_WITH(WSHUB_ERR_INVALID_ARGUMENT);
        CHECK(strstr(wshub_last_error(), "struct_size") != NULL);
        size_t untouched = 0;
        while (untouched < sizeof buffer && buffer[untouched] == 0xAB) {
            untouched++;
        }
        CHECK(untouched == sizeof buffer);

        opts = defaults();
        opts.struct_size = sizes[i];
        START_FAILS(&opts, WSHUB_ERR_INVALID_ARGUMENT);
        CHECK(strstr(wshub_last_error(), "opts->struct_size") != NULL);
    }
    opts = defaults();
    opts.struct_size = (size_t)(uintptr_t) "127.0.0.1"; /* an old host's opts.host */
    START_FAILS(&opts, WSHUB_ERR_INVALID_ARGUMENT);

    /* The previous layouts (before max_handshake_bytes, before
     * history_size, before retained_per_topic) are still read:
     * wshub_options_init() fills exactly that prefix, and wshub_start()
     * reads only it, whatever lies after it. */
    const size_t old_sizes[] = {offsetof(wshub_options, max_handshake_bytes),
                                offsetof(wshub_options, history_size),
                                offsetof(wshub_options, retained_per_topic),
                                offsetof(wshub_options, jwt_key)};
    for (size_t i = 0; i < sizeof old_sizes / sizeof old_sizes[0]; i++) {
        const size_t old_size = old_sizes[i];
        memset(buffer, 0xAB, sizeof buffer);
        CHECK(wshub_options_init((wshub_options *)(void *)buffer, old_size) == WSHUB_OK);
        size_t beyond = old_size;
        while (beyond < sizeof buffer && buffer[beyond] == 0xAB) {
            beyond++;
        }
        CHECK(beyond == sizeof buffer);
        wshub_options old;
        memcpy(&old, buffer, sizeof old);
        CHECK(old.struct_size == old_size);
        CHECK(strcmp(old.path, "/api/ws") == 0 && old.publish_queue_bytes == 64u << 20);
        wshub_server *old_hub = wshub_start(&old);
        CHECK(old_hub != NULL);
        wshub_stop(old_hub);
    }

    /* The right size starts a hub. */
    opts = defaults();
    opts.struct_size = sizeof opts;
    wshub_server *hub = wshub_start(&opts);
    CHECK(hub != NULL);
    wshub_stop(hub);
}

static void check_options(void) {
    CHECK(wshub_options_init(NULL, sizeof(wshub_options)) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_ARGUMENT);

    wshub_options opts = defaults();
    CHECK(strcmp(opts.host, "127.0.0.1") == 0);
    CHECK(strcmp(opts.path, "/api/ws") == 0);
    CHECK(opts.topics == NULL);
    CHECK(opts.port == 0);
    CHECK(opts.worker_threads == 1);
    CHECK(opts.ping_interval == 20.0);
    CHECK(opts.backplane == NULL && opts.backplane_prefix == NULL && !opts.reuse_port);
    CHECK(opts.max_handshake_bytes == 65536 && opts.max_headers == 64);
    CHECK(opts.retained_per_topic == 1000 && opts.retained_bytes == 64u << 20);
    CHECK(opts.jwt_key == NULL && strcmp(opts.jwt_algorithms, "HS256") == 0);
    CHECK(strcmp(opts.jwt_query, "token") == 0 && opts.jwt_leeway == 0.0);

    /* A bad token option is a config error, not a crash. */
    opts = defaults();
    opts.jwt_key = "secret";
    opts.jwt_algorithms = "HS256,RS256";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.jwt_algorithms = "RS256"; /* "secret" is no PEM key */
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.jwt_algorithms = NULL; /* the default, HS256 */
    opts.jwt_key_len = 3;       /* "sec" */
    wshub_server *jwt_hub = wshub_start(&opts);
    CHECK(jwt_hub != NULL);
    wshub_stop(jwt_hub);

    /* Scale-out: reuse_port needs a backplane; a bad URL or prefix is a
     * config error; an unreachable Redis (nothing listens on port 1) fails
     * with its own code. */
    opts = defaults();
    opts.reuse_port = true;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.backplane = "http://127.0.0.1:1";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.backplane = "redis://127.0.0.1:1/0";
    opts.backplane_prefix = "bad prefix";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.backplane_prefix = NULL;
    START_FAILS(&opts, WSHUB_ERR_BACKPLANE);

    opts = defaults();
    opts.host = NULL;
    START_FAILS(&opts, WSHUB_ERR_INVALID_ARGUMENT);
    opts = defaults();
    opts.path = NULL;
    START_FAILS(&opts, WSHUB_ERR_INVALID_ARGUMENT);

    opts = defaults();
    opts.host = "\xff\xfe";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.host = "";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts = defaults();
    opts.path = "no-slash";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.path = "/ws?query";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.path = "/\xc3";
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);

    const char *const empty_list[] = {NULL};
    const char *const bad_name[] = {"ok", "not ok", NULL};
    const char *const not_utf8[] = {"ok", "\xc3\x28", NULL};
    opts = defaults();
    opts.topics = empty_list;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.topics = bad_name;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts.topics = not_utf8;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);

    size_t *limits[] = {&opts.max_connections, &opts.max_message_bytes, &opts.send_queue,
                        &opts.publish_queue, &opts.worker_threads};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        opts = defaults();
        *limits[i] = 0;
        START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    }
    opts = defaults();
    opts.max_message_bytes = SIZE_MAX;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
    opts = defaults();
    opts.worker_threads = 100000;
    START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);

    const double bad_seconds[] = {0.0, -1.0, NAN, INFINITY, -INFINITY, 1e300};
    for (size_t i = 0; i < sizeof bad_seconds / sizeof bad_seconds[0]; i++) {
        double *durations[] = {&opts.ping_interval, &opts.ping_timeout, &opts.handshake_timeout,
                               &opts.shutdown_timeout};
        for (size_t j = 0; j < sizeof durations / sizeof durations[0]; j++) {
            opts = defaults();
            *durations[j] = bad_seconds[i];
            START_FAILS(&opts, WSHUB_ERR_INVALID_CONFIG);
        }
    }

    /* An address of no local interface (TEST-NET-1): the bind fails with
     * EADDRNOTAVAIL, without any traffic. */
    opts = defaults();
    opts.host = "192.0.2.1";
    START_FAILS(&opts, WSHUB_ERR_BIND);
}

static void check_port_in_use(void) {
    wshub_server *first = wshub_start(NULL);
    CHECK(first != NULL);
    if (first == NULL) {
        return;
    }
    wshub_options opts = defaults();
    opts.port = wshub_port(first);
    START_FAILS(&opts, WSHUB_ERR_ADDR_IN_USE);
    wshub_stop(first);
}

static void check_broadcast(wshub_server *hub) {
    const char *ok = "{\"a\":1}";
    size_t ok_len = strlen(ok);

    CHECK(wshub_broadcast(NULL, "t", ok, ok_len) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_broadcast(hub, NULL, ok, ok_len) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_broadcast(hub, "t", NULL, ok_len) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_broadcast(hub, "t", NULL, 0) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_broadcast(hub, "t", ok, SIZE_MAX) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_broadcast(hub, "t", ok, (size_t)PTRDIFF_MAX + 1) == WSHUB_ERR_INVALID_ARGUMENT);

    CHECK(wshub_broadcast(hub, "", ok, ok_len) == WSHUB_ERR_INVALID_TOPIC);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_TOPIC);
    CHECK(wshub_broadcast(hub, "a b", ok, ok_len) == WSHUB_ERR_INVALID_TOPIC);
    CHECK(wshub_broadcast(hub, "\xff", ok, ok_len) == WSHUB_ERR_INVALID_TOPIC);
    char long_topic[130];
    memset(long_topic, 'x', 129);
    long_topic[129] = '\0';
    CHECK(wshub_broadcast(hub, long_topic, ok, ok_len) == WSHUB_ERR_INVALID_TOPIC);
    long_topic[128] = '\0';
    CHECK(wshub_broadcast(hub, long_topic, ok, ok_len) == 0);

    CHECK(wshub_broadcast(hub, "t", ok, 0) == WSHUB_ERR_INVALID_JSON);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_JSON);
    CHECK(wshub_broadcast(hub, "t", "{", 1) == WSHUB_ERR_INVALID_JSON);
    CHECK(wshub_broadcast(hub, "t", "\"\xff\"", 3) == WSHUB_ERR_INVALID_JSON);
    CHECK(wshub_broadcast(hub, "t", "1\0", 2) == WSHUB_ERR_INVALID_JSON);
    CHECK(wshub_broadcast(hub, "t", ok, ok_len - 1) == WSHUB_ERR_INVALID_JSON);

    /* json need not be NUL-terminated: exactly json_len bytes are read
     * (a heap block of that size, so valgrind sees any read beyond it). */
    char *unterminated = malloc(3);
    CHECK(unterminated != NULL);
    if (unterminated != NULL) {
        memcpy(unterminated, "123", 3);
        CHECK(wshub_broadcast(hub, "t", unterminated, 3) == 0);
        free(unterminated);
    }
    CHECK(wshub_broadcast(hub, "t", ok, ok_len) == 0);
}

/* wshub_stream: bad arguments are codes; a topic the hub does not hold
 * is 0 with *seq 0; the epoch is written like snprintf. */
static void check_stream(wshub_server *hub) {
    char epoch[64];
    uint64_t seq = 42;
    CHECK(wshub_stream(NULL, "t", epoch, sizeof epoch, &seq) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_stream(hub, NULL, epoch, sizeof epoch, &seq) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_stream(hub, "t", epoch, sizeof epoch, NULL) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_stream(hub, "t", NULL, 5, &seq) == WSHUB_ERR_INVALID_ARGUMENT);
    memset(epoch, 'x', sizeof epoch);
    CHECK(wshub_stream(hub, "nobody-here", epoch, sizeof epoch, &seq) == 0);
    CHECK(seq == 0 && epoch[0] == '\0');
    CHECK(wshub_stream(hub, "nobody-here", NULL, 0, &seq) == 0);
}

static void check_stats(wshub_server *hub) {
    char small[4] = "xyz";
    CHECK(wshub_stats_json(NULL, small, sizeof small) == WSHUB_ERR_INVALID_ARGUMENT);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_ARGUMENT);
    CHECK(wshub_stats_json(hub, NULL, 5) == WSHUB_ERR_INVALID_ARGUMENT);

    int needed = wshub_stats_json(hub, NULL, 0);
    CHECK(needed > 0);
    if (needed <= 0) {
        return;
    }
    /* Too small: nothing but a NUL at buf[0]. */
    CHECK(wshub_stats_json(hub, small, sizeof small) == needed);
    CHECK(small[0] == '\0' && small[1] == 'y');

    /* Exactly `needed` bytes is one too few for the NUL: still nothing.
     * Heap blocks of the exact size, so valgrind catches any overrun. */
    char *exact = malloc((size_t)needed);
    CHECK(exact != NULL);
    if (exact != NULL) {
        memset(exact, 'x', (size_t)needed);
        CHECK(wshub_stats_json(hub, exact, (size_t)needed) == needed);
        CHECK(exact[0] == '\0' && exact[1] == 'x');
        free(exact);
    }
    char *fits = malloc((size_t)needed + 1);
    CHECK(fits != NULL);
    if (fits != NULL) {
        CHECK(wshub_stats_json(hub, fits, (size_t)needed + 1) == needed);
        CHECK(strlen(fits) == (size_t)needed);
        CHECK(fits[0] == '{' && fits[needed - 1] == '}');
        CHECK(strstr(fits, "\"connections\":0") != NULL);
        free(fits);
    }
}

static void check_port(wshub_server *hub) {
    CHECK(wshub_port(hub) != 0);
    CHECK(wshub_port(NULL) == 0);
    CHECK_FAILED_WITH(WSHUB_ERR_INVALID_ARGUMENT);
}

/* The last error belongs to the thread that failed. */
static void *fail_on_other_thread(void *unused) {
    (void)unused;
    int failed = wshub_options_init(NULL, sizeof(wshub_options)) == WSHUB_ERR_INVALID_ARGUMENT &&
                 wshub_last_error_code() == WSHUB_ERR_INVALID_ARGUMENT;
    return failed ? (void *)1 : NULL;
}

static void check_last_error_is_per_thread(wshub_server *hub) {
    CHECK(wshub_broadcast(hub, "bad topic", "1", 1) == WSHUB_ERR_INVALID_TOPIC);
    const char *message = wshub_last_error();
    char copy[256];
    snprintf(copy, sizeof copy, "%s", message);

    pthread_t thread;
    void *result = NULL;
    CHECK(pthread_create(&thread, NULL, fail_on_other_thread, NULL) == 0);
    CHECK(pthread_join(thread, &result) == 0);
    CHECK(result == (void *)1);

    /* Neither the other thread's failure nor our successful calls touched
     * our message, and the pointer is still valid. */
    CHECK(wshub_broadcast(hub, "t", "2", 1) >= 0);
    CHECK(wshub_last_error_code() == WSHUB_ERR_INVALID_TOPIC);
    CHECK(wshub_last_error() == message);
    CHECK(strcmp(message, copy) == 0);
}

#define PUBLISHERS 4
#define PER_PUBLISHER 250

static void *publish_many(void *arg) {
    wshub_server *hub = arg;
    char json[32];
    for (int i = 0; i < PER_PUBLISHER; i++) {
        int len = snprintf(json, sizeof json, "{\"i\":%d}", i);
        if (wshub_broadcast(hub, "load", json, (size_t)len) < 0) {
            return NULL;
        }
    }
    return arg;
}

static void check_concurrent_broadcasts(void) {
    wshub_options opts = defaults();
    opts.worker_threads = 2;
    wshub_server *hub = wshub_start(&opts);
    CHECK(hub != NULL);
    if (hub == NULL) {
        return;
    }
    pthread_t threads[PUBLISHERS];
    for (int i = 0; i < PUBLISHERS; i++) {
        CHECK(pthread_create(&threads[i], NULL, publish_many, hub) == 0);
    }
    for (int i = 0; i < PUBLISHERS; i++) {
        void *result = NULL;
        CHECK(pthread_join(threads[i], &result) == 0);
        CHECK(result == hub);
    }
    char stats[1024];
    int length = wshub_stats_json(hub, stats, sizeof stats);
    CHECK(length > 0 && (size_t)length < sizeof stats);
    char expected[64];
    snprintf(expected, sizeof expected, "\"published\":%d,", PUBLISHERS * PER_PUBLISHER);
    CHECK(strstr(stats, expected) != NULL);
    wshub_stop(hub);
}

int main(void) {
    check_last_error_starts_empty();
    check_version();
    check_options();
    check_struct_size();
    check_port_in_use();

    wshub_server *hub = wshub_start(NULL);
    CHECK(hub != NULL);
    if (hub != NULL) {
        check_port(hub);
        check_broadcast(hub);
        check_stream(hub);
        check_stats(hub);
        check_last_error_is_per_thread(hub);
        wshub_stop(hub);
    }
    wshub_stop(NULL);
    check_concurrent_broadcasts();

    printf("abi_checks: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
