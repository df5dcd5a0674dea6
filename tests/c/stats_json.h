/*
 * stats_json.h: the stats JSON as a malloc'd string, for the test drivers.
 *
 * wshub_stats_json() follows snprintf: ask for the size, then fill a
 * buffer. The counters keep moving while clients are served, so the JSON
 * may have grown between the two calls (a "sent_bytes" gaining a digit);
 * the document is complete only when its length is below the buffer's size,
 * otherwise ask again with the newer size.
 */
#ifndef WSHUB_TEST_STATS_JSON_H
#define WSHUB_TEST_STATS_JSON_H

#include <stdlib.h>

#include "wshub.h"

/* The stats JSON (free() it), or NULL with *code set: a negative wshub_code,
 * or 0 when out of memory. */
static char *stats_json(const wshub_server *hub, int *code) {
    char *buf = NULL;
    size_t cap = 0;
    int length;
    while ((length = wshub_stats_json(hub, buf, cap)) >= 0 && (size_t)length >= cap) {
        cap = (size_t)length + 64;
        char *bigger = realloc(buf, cap);
        if (bigger == NULL) {
            free(buf);
            *code = 0;
            return NULL;
        }
        buf = bigger;
    }
    if (length < 0) {
        free(buf);
        *code = length;
        return NULL;
    }
    return buf;
}

#endif
