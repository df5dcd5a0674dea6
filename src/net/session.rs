//! A client's subscriptions, whatever carries them (a WebSocket, or a
//! Server-Sent Events stream): its bounded queue, the topics it is
//! subscribed to and may subscribe to, and the answers that change them.
//! The transports own the socket; this owns what the hub knows of the
//! client, so both transports keep the same rules, bounds and answers.

use crate::core::outbox::FrameEncoding;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::core::config::TopicPolicy;
use crate::core::hub::{Backlog, ConnId, Reserved};
use crate::core::outbox::{OutFrame, Outbox, Pushed};
use crate::core::stats::Counters;
use crate::net::Shared;
use crate::protocol::{self, ErrorCode, Position, ProtocolError, RejectReason, Rejected};

/// One client as the hub sees it.
pub(crate) struct Session {
    pub(crate) id: ConnId,
    /// Topics `authorize` and the token limit this client to (`None`: no
    /// limit).
    pub(crate) granted: Option<BTreeSet<String>>,
    pub(crate) outbox: Arc<Outbox>,
    /// Topics this client is subscribed to, sorted for the answers (a
    /// sorted Vec: a few topics each, and every idle connection pays for
    /// this, so no tree nodes).
    pub(crate) subscriptions: Vec<String>,
    pub(crate) shared: Arc<Shared>,
}

/// Percent-encodes what goes back into a query string, so that a
/// position list from a header parses like the query's own.
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl Session {
    /// A new client with an empty queue of the configured bounds.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        granted: Option<BTreeSet<String>>,
        encoding: FrameEncoding,
    ) -> Self {
        Session {
            id: shared.next_conn_id(),
            granted,
            outbox: Arc::new(
                Outbox::new(shared.config.send_queue, shared.config.send_queue_bytes)
                    .paced_by(shared.hub.pacing())
                    .encoded(encoding),
            ),
            subscriptions: Vec::new(),
            shared: Arc::clone(shared),
        }
    }

    /// Queues the ack, then subscribes, so no publication can precede it.
    /// Positions to recover come from the query's `since`, or from
    /// `positions` (the same `topic:seq:epoch,...` list, e.g. an SSE
    /// client's `Last-Event-ID`) when the query has none.
    pub(crate) fn start(&mut self, query: Option<&str>, positions: Option<&str>) {
        let requested = protocol::topics_from_query(query);
        let (mut since, mut malformed) = protocol::since_from_query(query);
        if since.is_empty() && malformed == 0 {
            if let Some(positions) = positions {
                (since, malformed) =
                    protocol::since_from_query(Some(&format!("since={}", encode(positions))));
            }
        }
        let (mut accepted, rejected) = self.sort_requested(requested);
        if accepted.is_empty() {
            if let TopicPolicy::Only(all) = &self.shared.config.topics {
                let limit = self.shared.config.max_topics_per_connection;
                let granted = |t: &&String| self.granted.as_ref().is_none_or(|g| g.contains(*t));
                accepted = all.iter().filter(granted).take(limit).cloned().collect();
            }
        }
        accepted.sort_unstable();
        // A position for a topic not subscribed here is as wrong as one
        // that does not parse.
        malformed += since
            .iter()
            .filter(|(topic, _)| accepted.binary_search(topic).is_err())
            .count();
        let mut rejected = rejected;
        let (topics, places) = self.reserve_all(accepted, &since, &mut rejected);
        let streams: Vec<_> = places.iter().map(|p| p.stream().clone()).collect();
        self.reply(protocol::connected_frame(&topics, &rejected, &streams));
        if malformed > 0 {
            self.reply(protocol::error_frame(&ProtocolError {
                code: ErrorCode::InvalidSince,
                message: format!(
                    "{malformed} item(s) of the query's \"since\" ignored: each must be \
                     topic:seq:epoch for a topic being subscribed"
                ),
            }));
        }
        for (topic, place) in topics.iter().zip(places) {
            self.shared
                .hub
                .subscribe_reserved(topic, place, self.id, &self.outbox);
        }
        self.subscriptions = topics;
    }

    /// Holds places on `accepted` (sorted), deciding the recoveries asked
    /// for in `since` within what the client's queue takes at once; names
    /// the full hub cannot take go to `rejected`.
    pub(crate) fn reserve_all(
        &self,
        accepted: Vec<String>,
        since: &[(String, Position)],
        rejected: &mut Vec<Rejected>,
    ) -> (Vec<String>, Vec<Reserved>) {
        let config = &self.shared.config;
        // Room for the answer and an error frame besides what is sent.
        let mut budget = Backlog {
            frames: config.send_queue.saturating_sub(2),
            bytes: config.send_queue_bytes / 2,
        };
        let mut topics = Vec::with_capacity(accepted.len());
        let mut places = Vec::with_capacity(accepted.len());
        for name in accepted {
            let position = since.iter().find(|(t, _)| *t == name).map(|(_, p)| p);
            match self.shared.hub.reserve(&name, position, budget) {
                Some(place) => {
                    let (frames, bytes) = place.backlog();
                    budget.frames -= frames;
                    budget.bytes -= bytes;
                    topics.push(name);
                    places.push(place);
                }
                None => rejected.push(Rejected {
                    name,
                    reason: RejectReason::HubFull,
                }),
            }
        }
        (topics, places)
    }

    fn is_subscribed(&self, topic: &String) -> bool {
        self.subscriptions.binary_search(topic).is_ok()
    }

    /// Splits requested names into the new ones this connection may
    /// subscribe to and the rejected ones with their reason. Names already
    /// subscribed (or repeated) are neither.
    fn sort_requested(&self, requested: Vec<String>) -> (Vec<String>, Vec<Rejected>) {
        let config = &self.shared.config;
        let mut accepted: Vec<String> = Vec::new();
        let mut rejected = Vec::new();
        for name in requested {
            let reason = if !protocol::is_valid_topic(&name) {
                Some(RejectReason::InvalidName)
            } else if matches!(&config.topics, TopicPolicy::Only(names) if !names.contains(&name))
                || self.granted.as_ref().is_some_and(|g| !g.contains(&name))
            {
                Some(RejectReason::NotAllowed)
            } else if self.is_subscribed(&name) || accepted.contains(&name) {
                continue;
            } else if self.subscriptions.len() + accepted.len() >= config.max_topics_per_connection
            {
                Some(RejectReason::TooManyTopics)
            } else {
                None
            };
            match reason {
                Some(reason) => rejected.push(Rejected { name, reason }),
                None => accepted.push(name),
            }
        }
        (accepted, rejected)
    }

    /// `subscribe`: the answer first, then what was recovered (or the
    /// retained values), then live publications, the same order as at
    /// connect time.
    pub(crate) fn subscribe(&mut self, topics: Vec<String>, since: &[(String, Position)]) {
        let (accepted, mut rejected) = self.sort_requested(topics);
        let (added, places) = self.reserve_all(accepted, since, &mut rejected);
        for topic in &added {
            if let Err(at) = self.subscriptions.binary_search(topic) {
                self.subscriptions.insert(at, topic.clone());
            }
        }
        let streams: Vec<_> = places.iter().map(|p| p.stream().clone()).collect();
        self.reply(protocol::subscribed_frame(
            &self.subscriptions,
            &rejected,
            &streams,
        ));
        for (topic, place) in added.iter().zip(places) {
            self.shared
                .hub
                .subscribe_reserved(topic, place, self.id, &self.outbox);
        }
    }

    /// `unsubscribe`: leaves the topics, then answers with what remains.
    pub(crate) fn unsubscribe(&mut self, names: Vec<String>) {
        for topic in names {
            self.leave(&topic);
        }
        self.reply(protocol::unsubscribed_frame(&self.subscriptions));
    }

    /// Limits the client to `granted` from now on (a refreshed token's
    /// topics): subscriptions it no longer allows end.
    pub(crate) fn restrict(&mut self, granted: Option<BTreeSet<String>>) {
        self.granted = granted;
        if let Some(granted) = &self.granted {
            let gone: Vec<String> = self
                .subscriptions
                .iter()
                .filter(|t| !granted.contains(*t))
                .cloned()
                .collect();
            for topic in gone {
                self.leave(&topic);
            }
        }
    }

    fn leave(&mut self, topic: &String) {
        if let Ok(at) = self.subscriptions.binary_search(topic) {
            self.subscriptions.remove(at);
            self.shared.hub.unsubscribe(topic, self.id);
        }
    }

    /// Queues an answer behind whatever is already queued, so answers and
    /// publications reach the client in the order they happened.
    pub(crate) fn reply(&self, text: String) {
        if let Pushed::Overflowed { dropped } = self.outbox.push(OutFrame::reply(text)) {
            let counters = &self.shared.hub.counters;
            Counters::add(&counters.dropped, dropped);
            Counters::add(&counters.slow_consumer_closes, 1);
        }
    }

    pub(crate) fn leave_topics(&mut self) {
        for topic in std::mem::take(&mut self.subscriptions) {
            self.shared.hub.unsubscribe(&topic, self.id);
        }
    }

    /// Leaves every topic and releases the queue; `pending` publications
    /// the transport still held are counted as dropped with the queue's.
    pub(crate) fn finish(&mut self, pending: u64) {
        let dropped = self.outbox.close() + pending;
        self.leave_topics();
        let counters = &self.shared.hub.counters;
        Counters::add(&counters.dropped, dropped);
        Counters::add(&counters.connections_closed, 1);
    }
}
