//! The `stats()` snapshot in the Prometheus/OpenMetrics text format, for
//! `GET /metrics` on the hub's own port. Encoding is `prometheus-client`'s;
//! this module only names the numbers.
//!
//! Per-topic series are limited to the [`METRICS_TOPIC_SERIES`] topics with
//! the most subscribers, plus two aggregates over all topics, so that a
//! scrape stays small and quick however many topics the hub holds.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::core::stats::{Kind, Stats};

/// Topics that get a `wshub_topic_subscribers{topic=...}` series at most
/// (those with the most subscribers; ties by name). Every topic is still
/// counted in `wshub_topics` and `wshub_subscriptions`, and `stats()` has
/// them all. A time series per made-up topic name would make every scrape
/// (and the monitoring system) pay for what clients invent.
pub const METRICS_TOPIC_SERIES: usize = 100;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `stats` as OpenMetrics text.
pub fn render(stats: &Stats) -> String {
    let mut registry = Registry::with_prefix("wshub");
    let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    for number in stats.numbers() {
        match number.kind {
            Kind::Gauge => registry.register(number.name, number.help, gauge(number.value)),
            Kind::Counter => {
                registry.register(number.name, number.help, ConstCounter::new(number.value));
            }
        }
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
    registry.register(
        "topics",
        "Topics with at least one subscriber",
        gauge(stats.topics.len() as u64),
    );
    registry.register(
        "subscriptions",
        "Subscriptions over all topics",
        gauge(stats.topics.values().sum()),
    );
    let mut top: Vec<(&String, &u64)> = stats.topics.iter().collect();
    if top.len() > METRICS_TOPIC_SERIES {
        // Most subscribers first; select, then sort only what is kept.
        let by_subscribers =
            |a: &(&String, &u64), b: &(&String, &u64)| b.1.cmp(a.1).then(a.0.cmp(b.0));
        top.select_nth_unstable_by(METRICS_TOPIC_SERIES, by_subscribers);
        top.truncate(METRICS_TOPIC_SERIES);
    }
    let subscribers = Family::<Vec<(String, String)>, Gauge>::default();
    for (topic, value) in top {
        subscribers
            .get_or_create(&vec![("topic".to_owned(), topic.clone())])
            .set(i64::try_from(*value).unwrap_or(i64::MAX));
    }
    registry.register(
        "topic_subscribers",
        "Subscribers per topic, for the topics with the most subscribers",
        subscribers,
    );
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
            subscription_events_dropped: 5,
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
        assert!(
            text.contains("wshub_subscription_events_dropped_total 5\n"),
            "{text}"
        );
        assert!(text.contains("wshub_backplane_dropped_total 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn per_topic_series_are_limited_to_the_busiest_topics() {
        let mut stats = Stats::default();
        for i in 0..100_000u64 {
            stats.topics.insert(format!("junk:{i}"), 1);
        }
        stats.topics.insert("busy".into(), 50);
        let text = render(&stats);
        let series = text.matches("wshub_topic_subscribers{").count();
        assert_eq!(series, METRICS_TOPIC_SERIES);
        assert!(text.contains("wshub_topic_subscribers{topic=\"busy\"} 50\n"));
        assert!(text.contains("wshub_topics 100001\n"), "{text}");
        assert!(text.contains("wshub_subscriptions 100050\n"), "{text}");
        assert!(text.len() < 64 * 1024, "{}", text.len());
    }
}
