/*
 * hooks_driver: a hub started with the hardening options and host hooks of
 * wshub_options, driven line by line over stdin, for tests/test_c_abi.py.
 *
 * Usage: hooks_driver [NAME=VALUE | NAME]...
 *   origin=URL          add URL to opts.allowed_origins (repeatable)
 *   auth=TOKEN          install opts.authorize; its opts.authorize_data
 *                       holds TOKEN (see on_authorize below)
 *   auth_timeout=SECS   opts.authorize_timeout
 *   events              install opts.on_subscription (+ its data)
 *   slow_client=N       opts.slow_client (any int, to test the check)
 *   send_queue=N        opts.send_queue
 *   rate_limit=X        opts.rate_limit
 *   rate_burst=N        opts.rate_burst
 *   max_topics=N        opts.max_topics_per_connection
 *   max_handshake_bytes=N  opts.max_handshake_bytes
 *   max_headers=N       opts.max_headers
 *   certfile=PATH       opts.certfile (TLS)
 *   keyfile=PATH        opts.keyfile (TLS)
 *   compression=N       opts.compression (any int, to test the check)
 *   compression_level=N opts.compression_level
 *   compression_min_size=N  opts.compression_min_size
 *   tls_layout          opts.struct_size of the layout before the
 *                       compression fields (which then hold junk)
 *   old_layout          opts.struct_size of the layout before
 *                       max_handshake_bytes (whose fields then hold junk)
 *
 * Prints "PORT <n>" once the hub listens, or "START_ERR <code> <message>"
 * and exits 1 when wshub_start() fails. Then answers each stdin line:
 *   PUB <topic> <key> <json> -> wshub_broadcast_keyed() (key "-": NULL):
 *                               "OK <subscribers>" or "ERR <code> <message>"
 *   STATS                    -> "STATS <json>" from wshub_stats_json()
 *   RELOAD_TLS               -> wshub_reload_tls(): "OK 0" or
 *                               "ERR <code> <message>"
 * At end of input it stops the hub and prints "STOPPED".
 *
 * The callbacks run on wshub's threads and print, at any time:
 *   EVENT <topic> <subscribers>                       (on_subscription)
 *   AUTH\t<path>\t<query>\t<request_json>\t<status>  (authorize)
 *     request_json: {"headers":[[n,v]...],"params":[[n,v]...],
 *     "cookies":[[n,v]...],"host":H,"port":P,"topics":[...],
 *     "grants":[<wshub_grant_topic() results>...],"concurrent":N}
 *   BADDATA <which>      a callback got a user_data it was not given
 * Every line is written and flushed under one mutex, so lines never mix.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stats_json.h"
#include "wshub.h"

#define MAX_ORIGINS 8
#define AUTH_MAGIC 0x41555448u   /* "AUTH" */
#define EVENT_MAGIC 0x45564e54u  /* "EVNT" */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* One whole line on stdout, flushed, never interleaved with another. */
static void say(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    pthread_mutex_lock(&out_lock);
    vprintf(fmt, args);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    va_end(args);
}

struct auth_data {
    unsigned magic;
    const char *token;
    pthread_mutex_t lock; /* authorize may run on several threads at once */
    pthread_cond_t changed;
    unsigned long calls;
    unsigned long running; /* calls running now */
    unsigned long most;    /* the most that ran at once */
};

struct event_data {
    unsigned magic;
    unsigned long calls; /* on_subscription runs one call at a time */
};

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A growing string, for the JSON of a request. */
struct text {
    char *data;
    size_t len, cap;
};

static void put(struct text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *grown = realloc(t->data, cap);
        if (grown == NULL) {
            abort();
        }
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void put_str(struct text *t, const char *s) { put(t, s, strlen(s)); }

/* s as a JSON string. */
static void put_json(struct text *t, const char *s) {
    put_str(t, "\"");
    for (; *s; s++) {
        char esc[8];
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            snprintf(esc, sizeof esc, "\\%c", c);
            put_str(t, esc);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put_str(t, esc);
        } else {
            put(t, (const char *)s, 1);
        }
    }
    put_str(t, "\"");
}

static void put_pairs(struct text *t, const char *key, const wshub_pair *pairs, size_t n) {
    put_str(t, "\"");
    put_str(t, key);
    put_str(t, "\":[");
    for (size_t i = 0; i < n; i++) {
        put_str(t, i ? ",[" : "[");
        put_json(t, pairs[i].name);
        put_str(t, ",");
        put_json(t, pairs[i].value);
        put_str(t, "]");
    }
    put_str(t, "],");
}

static const char *find(const wshub_pair *pairs, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(pairs[i].name, name) == 0) {
            return pairs[i].value;
        }
    }
    return NULL;
}

/*
 * Accepts the handshake when the header authorization is exactly
 * "Bearer <token>"; answers 401 for another authorization header and 403
 * without one. Query parameters steer the rest:
 *   sleep=MS   first sleep MS milliseconds (to outlast authorize_timeout)
 *   hold=N     wait (up to 5 s) until N calls run at once
 *   grant=T    wshub_grant_topic(grant, T), repeatable
 *   granted    return WSHUB_AUTHORIZE_GRANTED instead of ALLOW
 *   badgrant   also try wshub_grant_topic() with NULL arguments
 */
static int on_authorize(void *user_data, const wshub_request *request, wshub_grant *grant) {
    struct auth_data *data = user_data;
    if (data == NULL || data->magic != AUTH_MAGIC || request == NULL || grant == NULL) {
        say("BADDATA authorize\n");
        return 500;
    }
    const wshub_pair *params = request->query_params;
    size_t n_params = request->query_params_len;
    pthread_mutex_lock(&data->lock);
    data->calls++;
    data->running++;
    unsigned long concurrent = data->running;
    if (concurrent > data->most) {
        data->most = concurrent;
    }
    pthread_cond_broadcast(&data->changed);
    const char *hold = find(params, n_params, "hold");
    if (hold != NULL) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        unsigned long wanted = strtoul(hold, NULL, 10);
        while (data->most < wanted &&
               pthread_cond_timedwait(&data->changed, &data->lock, &until) == 0) {
        }
        concurrent = data->most;
    }
    pthread_mutex_unlock(&data->lock);

    const char *sleep = find(params, n_params, "sleep");
    if (sleep != NULL) {
        sleep_ms(strtol(sleep, NULL, 10));
    }

    struct text grants = {NULL, 0, 0};
    put_str(&grants, "[");
    for (size_t i = 0; i < n_params; i++) {
        if (strcmp(params[i].name, "grant") == 0) {
            char code[16];
            snprintf(code, sizeof code, "%s%d", grants.len > 1 ? "," : "",
                     wshub_grant_topic(grant, params[i].value));
            put_str(&grants, code);
        }
    }
    if (find(params, n_params, "badgrant") != NULL) {
        char codes[32];
        snprintf(codes, sizeof codes, "%s%d,%d", grants.len > 1 ? "," : "",
                 wshub_grant_topic(NULL, "t"), wshub_grant_topic(grant, NULL));
        put_str(&grants, codes);
    }
    put_str(&grants, "]");

    char wanted[256];
    snprintf(wanted, sizeof wanted, "Bearer %s", data->token);
    const char *authorization = find(request->headers, request->headers_len, "authorization");
    int status;
    if (authorization != NULL && strcmp(authorization, wanted) == 0) {
        status = find(params, n_params, "granted") != NULL ? WSHUB_AUTHORIZE_GRANTED
                                                           : WSHUB_AUTHORIZE_ALLOW;
    } else if (authorization != NULL) {
        status = 401;
    } else {
        status = 403;
    }

    struct text json = {NULL, 0, 0};
    put_str(&json, "{");
    put_pairs(&json, "headers", request->headers, request->headers_len);
    put_pairs(&json, "params", params, n_params);
    put_pairs(&json, "cookies", request->cookies, request->cookies_len);
    put_str(&json, "\"host\":");
    put_json(&json, request->client_host);
    char number[64];
    snprintf(number, sizeof number, ",\"port\":%u,\"topics\":[", (unsigned)request->client_port);
    put_str(&json, number);
    size_t n_topics = 0;
    for (; request->topics[n_topics] != NULL; n_topics++) {
        if (n_topics) {
            put_str(&json, ",");
        }
        put_json(&json, request->topics[n_topics]);
    }
    snprintf(number, sizeof number, "],\"topics_len_ok\":%s,\"grants\":",
             n_topics == request->topics_len ? "true" : "false");
    put_str(&json, number);
    put_str(&json, grants.data);
    snprintf(number, sizeof number, ",\"concurrent\":%lu}", concurrent);
    put_str(&json, number);
    say("AUTH\t%s\t%s\t%s\t%d\n", request->path, request->query, json.data, status);
    free(json.data);
    free(grants.data);

    pthread_mutex_lock(&data->lock);
    data->running--;
    pthread_mutex_unlock(&data->lock);
    return status;
}

static void on_subscription(void *user_data, const char *topic, uint64_t subscribers) {
    struct event_data *data = user_data;
    if (data == NULL || data->magic != EVENT_MAGIC) {
        say("BADDATA on_subscription\n");
        return;
    }
    data->calls++;
    say("EVENT %s %" PRIu64 "\n", topic, subscribers);
}

static void print_stats(const wshub_server *hub) {
    int code = 0;
    char *json = stats_json(hub, &code);
    if (json == NULL) {
        say("ERR %d %s\n", code, code < 0 ? wshub_last_error() : "out of memory");
        return;
    }
    say("STATS %s\n", json);
    free(json);
}

/* "PUB <topic> <key> <json>", the json being the rest of the line. */
static void publish(wshub_server *hub, char *args, size_t len) {
    char *end = args + len;
    char *space1 = memchr(args, ' ', len);
    char *space2 = space1 ? memchr(space1 + 1, ' ', (size_t)(end - space1 - 1)) : NULL;
    if (space2 == NULL) {
        say("ERR 0 expected 'PUB <topic> <key> <json>'\n");
        return;
    }
    *space1 = '\0';
    *space2 = '\0';
    const char *topic = args;
    const char *key = strcmp(space1 + 1, "-") == 0 ? NULL : space1 + 1;
    const char *json = space2 + 1;
    int64_t result = wshub_broadcast_keyed(hub, topic, json, (size_t)(end - json), key);
    if (result < 0) {
        say("ERR %" PRId64 " %s\n", result, wshub_last_error());
    } else {
        say("OK %" PRId64 "\n", result);
    }
}

static void handle_line(wshub_server *hub, char *line, size_t len) {
    if (len > 0 && line[len - 1] == '\n') {
        line[--len] = '\0';
    }
    if (strcmp(line, "STATS") == 0) {
        print_stats(hub);
    } else if (strcmp(line, "RELOAD_TLS") == 0) {
        int code = wshub_reload_tls(hub);
        if (code == WSHUB_OK) {
            say("OK 0\n");
        } else {
            say("ERR %d %s\n", code, wshub_last_error());
        }
    } else if (strncmp(line, "PUB ", 4) == 0) {
        publish(hub, line + 4, len - 4);
    } else {
        say("ERR 0 unknown command\n");
    }
}

static int usage(const char *arg) {
    fprintf(stderr, "hooks_driver: unknown or malformed argument %s\n", arg);
    return 2;
}

int main(int argc, char **argv) {
    wshub_options opts;
    if (wshub_options_default(&opts) != WSHUB_OK) {
        fprintf(stderr, "hooks_driver: wshub_options_default failed\n");
        return 1;
    }
    opts.port = 0;
    opts.shutdown_timeout = 1.0;

    const char *origins[MAX_ORIGINS + 1] = {NULL};
    size_t n_origins = 0;
    struct auth_data auth = {AUTH_MAGIC, NULL, PTHREAD_MUTEX_INITIALIZER,
                             PTHREAD_COND_INITIALIZER, 0, 0, 0};
    struct event_data events = {EVENT_MAGIC, 0};

    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        char *eq = strchr(arg, '=');
        const char *value = eq ? eq + 1 : "";
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
#define IS(name) (name_len == strlen(name) && strncmp(arg, name, name_len) == 0)
        if (IS("events")) {
            opts.on_subscription = on_subscription;
            opts.on_subscription_data = &events;
        } else if (IS("old_layout")) {
            /* A host built before these fields existed: the library must
             * not read them (their junk would fail validation). */
            opts.struct_size = offsetof(wshub_options, max_handshake_bytes);
            opts.max_handshake_bytes = 0;
            opts.max_headers = 0;
        } else if (IS("tls_layout")) {
            opts.struct_size = offsetof(wshub_options, compression);
            opts.compression = 7;
            opts.compression_level = -1;
        } else if (eq == NULL) {
            return usage(arg);
        } else if (IS("origin")) {
            if (n_origins == MAX_ORIGINS) {
                return usage(arg);
            }
            origins[n_origins++] = value;
            origins[n_origins] = NULL;
            opts.allowed_origins = origins;
        } else if (IS("auth")) {
            auth.token = value;
            opts.authorize = on_authorize;
            opts.authorize_data = &auth;
        } else if (IS("auth_timeout")) {
            opts.authorize_timeout = strtod(value, NULL);
        } else if (IS("slow_client")) {
            opts.slow_client = (int)strtol(value, NULL, 10);
        } else if (IS("send_queue")) {
            opts.send_queue = (size_t)strtoull(value, NULL, 10);
        } else if (IS("rate_limit")) {
            opts.rate_limit = strtod(value, NULL);
        } else if (IS("rate_burst")) {
            opts.rate_burst = (uint32_t)strtoul(value, NULL, 10);
        } else if (IS("max_topics")) {
            opts.max_topics_per_connection = (size_t)strtoull(value, NULL, 10);
        } else if (IS("max_handshake_bytes")) {
            opts.max_handshake_bytes = (size_t)strtoull(value, NULL, 10);
        } else if (IS("max_headers")) {
            opts.max_headers = (size_t)strtoull(value, NULL, 10);
        } else if (IS("certfile")) {
            opts.certfile = value;
        } else if (IS("keyfile")) {
            opts.keyfile = value;
        } else if (IS("compression")) {
            opts.compression = (int)strtol(value, NULL, 10);
        } else if (IS("compression_level")) {
            opts.compression_level = (int)strtol(value, NULL, 10);
        } else if (IS("compression_min_size")) {
            opts.compression_min_size = (size_t)strtoull(value, NULL, 10);
        } else {
            return usage(arg);
        }
#undef IS
    }

    wshub_server *hub = wshub_start(&opts);
    if (hub == NULL) {
        say("START_ERR %d %s\n", wshub_last_error_code(), wshub_last_error());
        return 1;
    }
    say("PORT %u\n", (unsigned)wshub_port(hub));

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        handle_line(hub, line, (size_t)len);
    }
    free(line);

    wshub_stop(hub);
    /* wshub_stop() has joined the hub's threads: no callback runs now. */
    say("STOPPED\n");
    pthread_mutex_destroy(&auth.lock);
    pthread_cond_destroy(&auth.changed);
    return 0;
}
