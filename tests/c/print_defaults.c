/* Prints, as one JSON object, the options wshub_options_init() fills in:
 * the C facade's view of the defaults, which tests/test_defaults.py
 * compares with Python's and the docs'. NULL pointers print as null. */
#include <stdio.h>

#include "wshub.h"

static void string_field(const char *name, const char *value, int last) {
    if (value) {
        printf("\"%s\":\"%s\"%s", name, value, last ? "" : ",");
    } else {
        printf("\"%s\":null%s", name, last ? "" : ",");
    }
}

int main(void) {
    wshub_options o;
    if (wshub_options_default(&o) != WSHUB_OK) {
        fprintf(stderr, "wshub_options_init failed: %s\n", wshub_last_error());
        return 1;
    }
    printf("{");
    string_field("host", o.host, 0);
    printf("\"port\":%u,", (unsigned)o.port);
    string_field("path", o.path, 0);
    printf("\"topics\":%s,", o.topics ? "\"set\"" : "null");
    printf("\"allowed_origins\":%s,", o.allowed_origins ? "\"set\"" : "null");
    printf("\"max_connections\":%zu,", o.max_connections);
    printf("\"max_message_bytes\":%zu,", o.max_message_bytes);
    printf("\"send_queue\":%zu,", o.send_queue);
    printf("\"send_queue_bytes\":%zu,", o.send_queue_bytes);
    printf("\"max_topics_per_connection\":%zu,", o.max_topics_per_connection);
    printf("\"max_topics\":%zu,", o.max_topics);
    printf("\"slow_client\":\"%s\",",
           o.slow_client == WSHUB_SLOW_CLIENT_DISCONNECT ? "disconnect"
           : o.slow_client == WSHUB_SLOW_CLIENT_CONFLATE ? "conflate"
                                                         : "?");
    printf("\"rate_limit\":%.17g,", o.rate_limit);
    printf("\"rate_burst\":%u,", (unsigned)o.rate_burst);
    printf("\"publish_queue\":%zu,", o.publish_queue);
    printf("\"publish_queue_bytes\":%zu,", o.publish_queue_bytes);
    printf("\"ping_interval\":%.17g,", o.ping_interval);
    printf("\"ping_timeout\":%.17g,", o.ping_timeout);
    printf("\"handshake_timeout\":%.17g,", o.handshake_timeout);
    printf("\"max_handshake_bytes\":%zu,", o.max_handshake_bytes);
    printf("\"max_headers\":%zu,", o.max_headers);
    printf("\"history_size\":%zu,", o.history_size);
    printf("\"history_bytes\":%zu,", o.history_bytes);
    /* 0 is "off", which Python spells None. */
    if (o.history_ttl == 0.0) {
        printf("\"history_ttl\":null,");
    } else {
        printf("\"history_ttl\":%.17g,", o.history_ttl);
    }
    printf("\"retained_per_topic\":%zu,", o.retained_per_topic);
    printf("\"retained_bytes\":%zu,", o.retained_bytes);
    string_field("jwt_key", o.jwt_key, 0);
    string_field("jwt_algorithms", o.jwt_algorithms, 0);
    string_field("jwt_audience", o.jwt_audience, 0);
    string_field("jwt_issuer", o.jwt_issuer, 0);
    printf("\"jwt_leeway\":%.17g,", o.jwt_leeway);
    string_field("jwt_query", o.jwt_query, 0);
    string_field("jwt_cookie", o.jwt_cookie, 0);
    string_field("certfile", o.certfile, 0);
    string_field("keyfile", o.keyfile, 0);
    /* An int flag in C, a bool in Python. */
    printf("\"compression\":%s,", o.compression == 1 ? "true" : o.compression == 0 ? "false" : "\"?\"");
    printf("\"compression_level\":%d,", o.compression_level);
    printf("\"compression_min_size\":%zu,", o.compression_min_size);
    printf("\"shutdown_timeout\":%.17g,", o.shutdown_timeout);
    printf("\"worker_threads\":%zu,", o.worker_threads);
    printf("\"on_subscription\":%s,", o.on_subscription ? "\"set\"" : "null");
    string_field("backplane", o.backplane, 0);
    string_field("backplane_prefix", o.backplane_prefix, 0);
    printf("\"reuse_port\":%s,", o.reuse_port ? "true" : "false");
    printf("\"authorize\":%s,", o.authorize ? "\"set\"" : "null");
    printf("\"authorize_timeout\":%.17g", o.authorize_timeout);
    printf("}\n");
    return 0;
}
