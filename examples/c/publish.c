/*
 * publish: the C API in one page.
 *
 * Starts a hub, waits for a first subscriber, publishes a few ticks on the
 * topic "ticks", prints the hub's stats and stops.
 *
 *   cargo build --release --lib
 *   gcc -Wall -Wextra -O2 -Iinclude examples/c/publish.c \
 *       -Ltarget/release -lwshub -Wl,-rpath,"$PWD/target/release" -o publish
 *   ./publish 8765 5     # port (0: any free one), number of ticks
 *
 * then, in another terminal, e.g. with websocat:
 *   websocat 'ws://127.0.0.1:8765/api/ws?topics=ticks'
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wshub.h"

static void sleep_ms(long ms) {
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* Prints the stats JSON, sized with the snprintf-like pattern. The counters
 * move while clients are served, so the JSON can grow between asking for
 * its size and filling the buffer: it is complete only when its length is
 * below the buffer's size; otherwise ask again. */
static void print_stats(const wshub_server *hub) {
    char *json = NULL;
    size_t cap = 0;
    int length;
    while ((length = wshub_stats_json(hub, json, cap)) >= 0 && (size_t)length >= cap) {
        cap = (size_t)length + 64;
        char *bigger = realloc(json, cap);
        if (bigger == NULL) {
            break;
        }
        json = bigger;
    }
    if (length < 0) {
        fprintf(stderr, "stats: %s\n", wshub_last_error());
    } else if (json != NULL && (size_t)length < cap) {
        printf("stats: %s\n", json);
    }
    free(json);
}

/* Whether a client is connected: "connections" is the first stats field. */
static int has_subscriber(const wshub_server *hub) {
    char json[4096];
    int length = wshub_stats_json(hub, json, sizeof json);
    return length > 0 && (size_t)length < sizeof json &&
           strncmp(json, "{\"connections\":0,", 17) != 0;
}

int main(int argc, char **argv) {
    wshub_options opts;
    wshub_options_default(&opts);
    opts.port = argc > 1 ? (uint16_t)atoi(argv[1]) : 8765;
    int ticks = argc > 2 ? atoi(argv[2]) : 5;
    const char *const topics[] = {"ticks", NULL}; /* borrowed during wshub_start only */
    opts.topics = topics;

    wshub_server *hub = wshub_start(&opts);
    if (hub == NULL) {
        fprintf(stderr, "wshub_start: %s (code %d)\n", wshub_last_error(),
                wshub_last_error_code());
        return 1;
    }
    printf("wshub %s listening on ws://127.0.0.1:%u/api/ws?topics=ticks\n", wshub_version(),
           (unsigned)wshub_port(hub));
    fflush(stdout);

    /* Wait up to 30 s for a subscriber. */
    for (int waited = 0; !has_subscriber(hub) && waited < 3000; waited++) {
        sleep_ms(10);
    }

    for (int i = 1; i <= ticks; i++) {
        char json[64];
        int len = snprintf(json, sizeof json, "{\"tick\":%d,\"of\":%d}", i, ticks);
        int64_t queued = wshub_broadcast(hub, "ticks", json, (size_t)len);
        if (queued < 0) {
            fprintf(stderr, "wshub_broadcast: %s\n", wshub_last_error());
            break;
        }
        printf("published %s to %" PRId64 " subscriber(s)\n", json, queued);
        fflush(stdout);
        sleep_ms(100);
    }

    print_stats(hub);
    wshub_stop(hub); /* close 1001 to every client, join the threads, free */
    return 0;
}
