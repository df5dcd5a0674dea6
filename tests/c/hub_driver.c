/*
 * hub_driver: a hub driven line by line over stdin, for tests/test_c_abi.py.
 *
 * Usage: hub_driver [TOPIC...]
 *   With TOPIC arguments the hub allows only those topics (opts.topics);
 *   without, any topic.
 *
 * Prints "PORT <n>" once the hub listens, then answers each stdin line:
 *   <topic> <json>   -> wshub_broadcast(): "OK <subscribers>" or
 *                       "ERR <code> <message>" (json is the rest of the
 *                       line, passed with its exact length)
 *   STATS            -> "STATS <json>" from wshub_stats_json()
 *   EX <flags> <topic> <key> <json>
 *                    -> wshub_broadcast_ex() (key "-": NULL), answered
 *                       like a publication
 *   CLEAR <topic> <key> -> wshub_clear_retained() (key "-": NULL):
 *                       "OK 0" or "ERR <code> <message>"
 * The environment variables HUB_DRIVER_RETAINED_BYTES and
 * HUB_DRIVER_JWT_KEY, if set, are opts.retained_bytes and opts.jwt_key.
 * At end of input it stops the hub and prints "STOPPED".
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats_json.h"
#include "wshub.h"

static int fail(const char *what) {
    fprintf(stderr, "hub_driver: %s failed: %s (code %d)\n", what, wshub_last_error(),
            wshub_last_error_code());
    return 1;
}

static void print_stats(const wshub_server *hub) {
    int code = 0;
    char *json = stats_json(hub, &code);
    if (json == NULL) {
        printf("ERR %d %s\n", code, code < 0 ? wshub_last_error() : "out of memory");
        return;
    }
    printf("STATS %s\n", json);
    free(json);
}

static void print_result(int64_t result) {
    if (result < 0) {
        printf("ERR %" PRId64 " %s\n", result, wshub_last_error());
    } else {
        printf("OK %" PRId64 "\n", result);
    }
}

/* Splits off the next space-separated word of *rest; "-" reads as NULL. */
static const char *word(char **rest) {
    char *start = *rest;
    char *space = strchr(start, ' ');
    if (space != NULL) {
        *space = '\0';
        *rest = space + 1;
    } else {
        *rest = start + strlen(start);
    }
    return strcmp(start, "-") == 0 ? NULL : start;
}

static void handle_line(wshub_server *hub, char *line, size_t len) {
    if (len > 0 && line[len - 1] == '\n') {
        line[--len] = '\0';
    }
    if (strcmp(line, "STATS") == 0) {
        print_stats(hub);
        return;
    }
    if (strncmp(line, "EX ", 3) == 0) {
        char *rest = line + 3;
        unsigned flags = (unsigned)strtoul(word(&rest), NULL, 10);
        const char *topic = word(&rest);
        const char *key = word(&rest);
        print_result(wshub_broadcast_ex(hub, topic, rest, strlen(rest), key, flags));
        return;
    }
    if (strncmp(line, "CLEAR ", 6) == 0) {
        char *rest = line + 6;
        const char *topic = word(&rest);
        const char *key = word(&rest);
        print_result(wshub_clear_retained(hub, topic, key));
        return;
    }
    char *space = memchr(line, ' ', len);
    if (space == NULL) {
        printf("ERR 0 expected '<topic> <json>'\n");
        return;
    }
    *space = '\0';
    const char *json = space + 1;
    size_t json_len = len - (size_t)(json - line);
    print_result(wshub_broadcast(hub, line, json, json_len));
}

int main(int argc, char **argv) {
    wshub_options opts;
    if (wshub_options_default(&opts) != WSHUB_OK) {
        return fail("wshub_options_default");
    }
    opts.port = 0;
    opts.shutdown_timeout = 1.0;
    const char *retained_bytes = getenv("HUB_DRIVER_RETAINED_BYTES");
    if (retained_bytes != NULL) {
        opts.retained_bytes = (size_t)strtoull(retained_bytes, NULL, 10);
    }
    opts.jwt_key = getenv("HUB_DRIVER_JWT_KEY");
    if (argc > 1) {
        /* argv is NULL-terminated, exactly the shape opts.topics wants. */
        opts.topics = (const char *const *)&argv[1];
    }
    wshub_server *hub = wshub_start(&opts);
    if (hub == NULL) {
        return fail("wshub_start");
    }
    printf("PORT %u\n", (unsigned)wshub_port(hub));
    fflush(stdout);

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        handle_line(hub, line, (size_t)len);
        fflush(stdout);
    }
    free(line);

    wshub_stop(hub);
    printf("STOPPED\n");
    return 0;
}
