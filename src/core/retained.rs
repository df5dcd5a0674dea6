//! Retained values: the newest publication per (topic, key) that the host
//! asked to keep (`broadcast(..., retain=True)`), so that a client that
//! subscribes later starts from the current state (the price of every
//! market) instead of waiting for each key to change again.
//!
//! A topic's values live beside its subscribers, under the same lock, and
//! only the fan-out changes them, in publication order: a new subscriber
//! is handed the values kept so far and then every publication fanned out
//! after them, so per key it never sees an older value after a newer one,
//! nor the same one twice. They are bounded per topic (values) and across
//! the hub (bytes); what the bounds push out is counted, never silent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

/// How many retained values the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedLimits {
    /// Values kept per topic at most: a new key past it pushes out the
    /// topic's oldest value.
    pub per_topic: usize,
    /// Bytes of retained frames kept across all topics at most (0: the
    /// hub keeps none).
    pub bytes: usize,
}

impl RetainedLimits {
    /// No retained values at all.
    pub const NONE: RetainedLimits = RetainedLimits {
        per_topic: 0,
        bytes: 0,
    };
}

/// One kept value.
#[derive(Debug, Clone)]
pub struct Value {
    /// The `seq` of the publication it came from.
    pub seq: u64,
    /// Its frame as a new subscriber receives it (`"retained":true`).
    pub frame: Bytes,
    /// Its conflation key, if the conflate policy gave it one: a live
    /// publication of the same key replaces it in a client that is behind.
    pub conflation: Option<Arc<str>>,
}

/// What [`Retained::keep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Stored; `evicted` older values of the topic were pushed out to
    /// stay within the bounds.
    Stored {
        /// Values pushed out.
        evicted: u64,
    },
    /// Not stored: the hub-wide byte bound is reached and the topic has no
    /// older value left to give up for it.
    Refused,
}

/// The retained values of one topic.
#[derive(Debug, Default)]
pub struct Retained {
    /// The value published without a key (one per topic).
    keyless: Option<Value>,
    keyed: HashMap<Arc<str>, Value>,
    /// Every value's `seq` and key, oldest first: the order a subscriber
    /// receives them in, and which goes first when the bounds push.
    order: BTreeMap<u64, Option<Arc<str>>>,
    bytes: usize,
}

impl Retained {
    /// Keeps `value` as the newest of `key` (`None`: the topic's keyless
    /// value), replacing the older one. `used` is the bytes the whole hub
    /// keeps now (this topic included), which the caller updates by the
    /// change in [`Retained::bytes`].
    pub fn keep(
        &mut self,
        key: Option<&Arc<str>>,
        value: Value,
        limits: &RetainedLimits,
        used: usize,
    ) -> Kept {
        let len = value.frame.len();
        // The hub's bytes without this topic's, and what this topic may
        // keep beside them.
        let others = used.saturating_sub(self.bytes);
        let room = limits.bytes.saturating_sub(others);
        if len > room {
            return Kept::Refused;
        }
        self.remove(key);
        let mut evicted = 0;
        while !self.order.is_empty()
            && (self.order.len() >= limits.per_topic || self.bytes + len > room)
        {
            self.evict_oldest();
            evicted += 1;
        }
        self.bytes += len;
        self.order.insert(value.seq, key.cloned());
        match key {
            Some(key) => {
                self.keyed.insert(Arc::clone(key), value);
            }
            None => self.keyless = Some(value),
        }
        Kept::Stored { evicted }
    }

    /// Forgets the value of `key`, or every value when `key` is `None`;
    /// returns how many went.
    pub fn clear(&mut self, key: Option<&str>) -> u64 {
        match key {
            Some(key) => {
                let Some(value) = self.keyed.remove(key) else {
                    return 0;
                };
                self.order.remove(&value.seq);
                self.bytes -= value.frame.len();
                1
            }
            None => {
                let n = self.order.len() as u64;
                *self = Retained::default();
                n
            }
        }
    }

    /// The values, oldest first.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> {
        self.order.values().filter_map(|key| match key {
            Some(key) => self.keyed.get(key),
            None => self.keyless.as_ref(),
        })
    }

    /// How many values are kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Bytes of the kept frames.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: Option<&Arc<str>>) {
        let old = match key {
            Some(key) => self.keyed.remove(key),
            None => self.keyless.take(),
        };
        if let Some(old) = old {
            self.order.remove(&old.seq);
            self.bytes -= old.frame.len();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            let old = match key {
                Some(key) => self.keyed.remove(&key),
                None => self.keyless.take(),
            };
            if let Some(old) = old {
                self.bytes -= old.frame.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seq: u64, len: usize) -> Value {
        Value {
            seq,
            frame: Bytes::from(vec![b'x'; len]),
            conflation: None,
        }
    }

    fn seqs(retained: &Retained) -> Vec<u64> {
        retained.values().map(|v| v.seq).collect()
    }

    const ROOMY: RetainedLimits = RetainedLimits {
        per_topic: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn the_newest_value_per_key_is_kept_in_seq_order() {
        let mut r = Retained::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        r.keep(Some(&a), value(1, 10), &ROOMY, 0);
        r.keep(Some(&b), value(2, 10), &ROOMY, 10);
        r.keep(None, value(3, 10), &ROOMY, 20);
        assert_eq!(
            r.keep(Some(&a), value(4, 5), &ROOMY, 30),
            Kept::Stored { evicted: 0 }
        );
        assert_eq!(seqs(&r), [2, 3, 4]);
        assert_eq!(r.bytes(), 25);
        assert_eq!(r.clear(Some("b")), 1);
        assert_eq!(r.clear(Some("b")), 0);
        assert_eq!(seqs(&r), [3, 4]);
        assert_eq!(r.clear(None), 2);
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_new_key_past_the_topic_bound_pushes_out_the_oldest() {
        let limits = RetainedLimits {
            per_topic: 2,
            bytes: 1 << 20,
        };
        let mut r = Retained::default();
        let keys: Vec<Arc<str>> = ["a", "b", "c"].map(Arc::from).into();
        r.keep(Some(&keys[0]), value(1, 1), &limits, 0);
        r.keep(Some(&keys[1]), value(2, 1), &limits, 1);
        assert_eq!(
            r.keep(Some(&keys[2]), value(3, 1), &limits, 2),
            Kept::Stored { evicted: 1 }
        );
        assert_eq!(seqs(&r), [2, 3]);
        // Replacing a key that is kept pushes nothing out.
        assert_eq!(
            r.keep(Some(&keys[1]), value(4, 1), &limits, 2),
            Kept::Stored { evicted: 0 }
        );
        assert_eq!(seqs(&r), [3, 4]);
    }

    #[test]
    fn the_hub_byte_bound_takes_from_this_topic_or_refuses() {
        let limits = RetainedLimits {
            per_topic: 100,
            bytes: 100,
        };
        let mut r = Retained::default();
        let keys: Vec<Arc<str>> = ["a", "b", "c"].map(Arc::from).into();
        // Other topics hold 50 bytes: this one may keep 50.
        r.keep(Some(&keys[0]), value(1, 30), &limits, 50);
        assert_eq!(
            r.keep(Some(&keys[1]), value(2, 30), &limits, 80),
            Kept::Stored { evicted: 1 }
        );
        assert_eq!(seqs(&r), [2]);
        // Larger than all this topic may keep: refused, nothing lost.
        assert_eq!(
            r.keep(Some(&keys[2]), value(3, 60), &limits, 80),
            Kept::Refused
        );
        assert_eq!(seqs(&r), [2]);
    }
}
