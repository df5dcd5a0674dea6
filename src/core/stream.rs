//! A topic's stream: its last publications, kept as the frames already
//! encoded for the wire with their `seq`, so that a client that lost its
//! connection can be sent exactly what it missed; and the epoch, the name
//! of one lifetime of the topic's numbering, so that a client can tell a
//! position in this numbering from one in another (a hub restarted, a
//! topic forgotten and created anew).
//!
//! The stream is bounded three ways (publications, bytes, age), trimmed
//! oldest first as publications are appended. A recovery that was promised
//! to a client (the answer said `"recovered":true`) pins the oldest entry
//! it needs until the client's subscription has copied them, so trimming
//! in between cannot take them away.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How much of each topic's stream the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Publications kept per topic (0: no history).
    pub size: usize,
    /// Bytes of their frames kept per topic.
    pub bytes: usize,
    /// Age after which a publication leaves the history (`None`: kept
    /// until the other bounds push it out).
    pub ttl: Option<Duration>,
}

impl HistoryLimits {
    /// No history at all.
    pub const NONE: HistoryLimits = HistoryLimits {
        size: 0,
        bytes: 0,
        ttl: None,
    };
}

/// One publication in a stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its number in the topic.
    pub seq: u64,
    /// Its whole WebSocket frame, shared with every subscriber.
    pub frame: Bytes,
    /// Its conflation key, if the conflate policy gave it one.
    pub key: Option<Arc<str>>,
    /// When it was appended (for the age bound).
    at: Instant,
}

/// The last publications of one topic.
#[derive(Debug, Default)]
pub struct Stream {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The newest `seq` appended (0: none yet).
    last: u64,
    /// The oldest `seq` of each recovery promised and not yet copied.
    pins: Vec<u64>,
}

impl Stream {
    /// Appends a publication (in `seq` order) and trims to `limits`.
    pub fn append(
        &mut self,
        seq: u64,
        frame: Bytes,
        key: Option<Arc<str>>,
        limits: &HistoryLimits,
        now: Instant,
    ) {
        self.last = self.last.max(seq);
        if limits.size == 0 && self.pins.is_empty() {
            return;
        }
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            seq,
            frame,
            key,
            at: now,
        });
        self.trim(limits, now);
    }

    /// Drops the oldest entries beyond `limits` (never a pinned one).
    pub fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        let pinned = self.pins.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > limits.size
                || self.bytes > limits.bytes
                || limits
                    .ttl
                    .is_some_and(|ttl| now.saturating_duration_since(front.at) > ttl);
            if !over || front.seq >= pinned {
                break;
            }
            self.bytes -= front.frame.len();
            self.entries.pop_front();
        }
    }

    /// The newest `seq` this stream has seen (0: none).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether nothing is kept (the topic's history costs nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the frames kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether every publication after `seq` that this stream has seen is
    /// still kept (and younger than the age bound).
    pub fn covers(&self, seq: u64, limits: &HistoryLimits, now: Instant) -> bool {
        if seq >= self.last {
            return true;
        }
        let Some(front) = self.entries.front() else {
            return false;
        };
        let fresh = |e: &Entry| {
            limits
                .ttl
                .is_none_or(|ttl| now.saturating_duration_since(e.at) <= ttl)
        };
        // The entry right after `seq` must be there, and not expired.
        front.seq <= seq + 1 && self.entries.iter().find(|e| e.seq > seq).is_some_and(fresh)
    }

    /// The kept publications after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        let start = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.range(start..)
    }

    /// How many kept publications come after `seq`, and their bytes.
    pub fn backlog(&self, seq: u64) -> (usize, usize) {
        self.after(seq)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.frame.len()))
    }

    /// Keeps every entry from `seq` on until [`Stream::unpin`].
    pub fn pin(&mut self, seq: u64) {
        self.pins.push(seq);
    }

    /// Releases one [`Stream::pin`] of `seq`, then trims to `limits`.
    pub fn unpin(&mut self, seq: u64, limits: &HistoryLimits, now: Instant) {
        if let Some(at) = self.pins.iter().position(|&p| p == seq) {
            self.pins.swap_remove(at);
        }
        self.trim(limits, now);
    }
}

/// Names the epochs of one hub: a random part drawn when the hub starts
/// (so a restarted hub never reuses a name) and a counter.
#[derive(Debug)]
pub struct Epochs {
    base: u64,
    next: AtomicU64,
}

impl Default for Epochs {
    fn default() -> Self {
        // The standard library's hasher keys are random per process and
        // per `RandomState`; mixing in the time separates two hubs of one
        // process too.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Epochs {
            base: hasher.finish(),
            next: AtomicU64::new(1),
        }
    }
}

impl Epochs {
    /// A new epoch name: 8 hex digits of the hub's random part, then the
    /// counter in hex.
    pub fn next(&self) -> Arc<str> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{:08x}{n:x}", self.base >> 32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            bytes: usize::MAX,
            ttl: None,
        }
    }

    fn fill(stream: &mut Stream, seqs: std::ops::RangeInclusive<u64>, l: &HistoryLimits) {
        let now = Instant::now();
        for seq in seqs {
            stream.append(seq, Bytes::from(vec![b'x'; 10]), None, l, now);
        }
    }

    #[test]
    fn keeps_the_newest_within_the_bounds() {
        let l = limits(3);
        let mut s = Stream::default();
        fill(&mut s, 1..=5, &l);
        assert_eq!(s.after(0).map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(s.bytes(), 30);
        assert!(s.covers(2, &l, Instant::now()));
        assert!(!s.covers(1, &l, Instant::now()));
        assert!(s.covers(5, &l, Instant::now()));
        assert_eq!(s.backlog(3), (2, 20));
        let by_bytes = HistoryLimits {
            size: 100,
            bytes: 25,
            ttl: None,
        };
        fill(&mut s, 6..=6, &by_bytes);
        assert_eq!(s.after(0).map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn a_pin_holds_entries_until_released() {
        let l = limits(2);
        let mut s = Stream::default();
        fill(&mut s, 1..=2, &l);
        s.pin(1);
        fill(&mut s, 3..=4, &l);
        assert_eq!(s.after(0).count(), 4);
        s.unpin(1, &l, Instant::now());
        assert_eq!(s.after(0).map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn expired_entries_are_not_covered_and_are_trimmed() {
        let l = HistoryLimits {
            size: 10,
            bytes: usize::MAX,
            ttl: Some(Duration::from_millis(10)),
        };
        let mut s = Stream::default();
        let then = Instant::now();
        s.append(1, Bytes::from_static(b"a"), None, &l, then);
        let later = then + Duration::from_millis(50);
        assert!(!s.covers(0, &l, later));
        s.trim(&l, later);
        assert!(s.is_empty());
        assert_eq!(s.last(), 1);
    }

    #[test]
    fn no_history_keeps_nothing_but_the_last_seq() {
        let mut s = Stream::default();
        fill(&mut s, 1..=3, &HistoryLimits::NONE);
        assert!(s.is_empty());
        assert_eq!(s.last(), 3);
        assert!(s.covers(3, &HistoryLimits::NONE, Instant::now()));
        assert!(!s.covers(2, &HistoryLimits::NONE, Instant::now()));
    }

    #[test]
    fn epochs_differ_within_and_across_hubs() {
        let a = Epochs::default();
        let b = Epochs::default();
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.len() <= crate::protocol::MAX_EPOCH_LEN);
    }
}
