//! The `stats()` snapshot in the Prometheus/OpenMetrics text format, for
//! `GET /metrics` on the hub's own port. Encoding is `prometheus-client`'s;
//! this module only names the numbers.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::stats::Stats;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `stats` as OpenMetrics text.
pub fn render(stats: &Stats) -> String {
    let mut registry = Registry::with_prefix("wshub");
    let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    registry.register(
        "connections",
        "Open WebSocket connections",
        gauge(stats.connections),
    );
    for (name, help, value) in [
        (
            "connections_opened",
            "Handshakes completed",
            stats.connections_opened,
        ),
        (
            "connections_closed",
            "Connections ended, for any reason",
            stats.connections_closed,
        ),
        (
            "published",
            "Publications accepted by broadcast",
            stats.published,
        ),
        ("sent", "Publication frames written to clients", stats.sent),
        (
            "sent_bytes",
            "Bytes of publication frames written to clients, headers included",
            stats.sent_bytes,
        ),
        (
            "dropped",
            "Publication frames lost to closed slow clients",
            stats.dropped,
        ),
        (
            "slow_consumer_closes",
            "Clients closed with 1008 for a full queue",
            stats.slow_consumer_closes,
        ),
        (
            "conflated",
            "Pending publications replaced by newer ones of their key",
            stats.conflated,
        ),
        (
            "backplane_published",
            "Publications handed to the Redis backplane",
            stats.backplane_published,
        ),
        (
            "backplane_received",
            "Publications received from the Redis backplane",
            stats.backplane_received,
        ),
        (
            "backplane_dropped",
            "Publications of this hub that never reached Redis",
            stats.backplane_dropped,
        ),
        (
            "backplane_missed",
            "Publications of the backplane this hub did not deliver (seq gaps)",
            stats.backplane_missed,
        ),
        (
            "backplane_reconnects",
            "Times the backplane re-established its connection to Redis",
            stats.backplane_reconnects,
        ),
    ] {
        registry.register(name, help, ConstCounter::new(value));
    }
    registry.register(
        "backplane_connected",
        "1 while the Redis backplane is connected",
        gauge(u64::from(stats.backplane_connected)),
    );
    let rejected = Family::<Vec<(String, String)>, Counter>::default();
    for (reason, value) in &stats.handshakes_rejected {
        rejected
            .get_or_create(&vec![("reason".to_owned(), reason.clone())])
            .inc_by(*value);
    }
    registry.register(
        "handshakes_rejected",
        "Handshakes refused, by reason",
        rejected,
    );
    let subscribers = Family::<Vec<(String, String)>, Gauge>::default();
    for (topic, value) in &stats.topics {
        subscribers
            .get_or_create(&vec![("topic".to_owned(), topic.clone())])
            .set(i64::try_from(*value).unwrap_or(i64::MAX));
    }
    registry.register("topic_subscribers", "Subscribers per topic", subscribers);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_labels_are_rendered() {
        let mut stats = Stats {
            connections: 3,
            published: 7,
            ..Stats::default()
        };
        stats.topics.insert("odds".into(), 2);
        stats.handshakes_rejected.insert("origin".into(), 1);
        let text = render(&stats);
        assert!(text.contains("wshub_connections 3\n"), "{text}");
        assert!(text.contains("wshub_published_total 7\n"), "{text}");
        assert!(
            text.contains("wshub_topic_subscribers{topic=\"odds\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wshub_handshakes_rejected_total{reason=\"origin\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("wshub_backplane_connected 0\n"), "{text}");
        assert!(text.contains("wshub_backplane_dropped_total 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
