//! The one error type of the core. Each binding maps its variants onto its
//! own conventions (Python exceptions, C error codes), so the variants are
//! chosen by what a caller must do differently, not by where they arise.

use std::io;

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload given to `broadcast` is not valid JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A topic name is not 1-128 characters of `[A-Za-z0-9_.:-]`.
    #[error("invalid topic name {0:?}: use 1-128 characters of [A-Za-z0-9_.:-]")]
    InvalidTopic(String),
    /// `broadcast(..., retain=True)` of a value the hub cannot keep:
    /// retained values are off (`retained_bytes` 0), or the value alone
    /// is larger than all they may hold. Nothing is sent.
    #[error("cannot retain this publication: {0}")]
    NotRetainable(String),
    /// An option is out of range or malformed.
    #[error("invalid option: {0}")]
    InvalidConfig(String),
    /// The hub was stopped (or never started).
    #[error("the hub is not running")]
    NotRunning,
    /// The publication queue is full and the caller is a thread of the
    /// hub's own runtime, where waiting for room would deadlock.
    #[error("the hub's publish queue is full")]
    Overloaded,
    /// The hub belongs to the process that started it; this process is a
    /// `fork()` of it, where its threads do not exist.
    #[error(
        "wshub was started in process {parent} and this process ({child}) is a fork of it: \
         a hub cannot be used or started after fork(); start hubs in each process after forking \
         (e.g. in each worker's startup), not before"
    )]
    Forked {
        /// The process that started the hub.
        parent: u32,
        /// This process.
        child: u32,
    },
    /// The listening socket could not be set up (port in use, bad host...).
    #[error("cannot listen on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        /// What we tried to listen on.
        addr: String,
        /// The OS error, whose errno the bindings pass on.
        #[source]
        source: io::Error,
    },
    /// The Redis backplane could not be reached when the hub started (a
    /// hub with a backplane does not start without it).
    #[error(
        "cannot reach the Redis backplane at {addr}: {reason}; start Redis or fix the \
         backplane URL (a hub with a backplane does not start without it)"
    )]
    Backplane {
        /// Where Redis was expected (host:port or socket path).
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The TLS certificate or key (`certfile`, `keyfile`) could not be
    /// read or do not make a usable server configuration; at `start()`
    /// the hub does not start, at `reload_tls()` it keeps the old ones.
    #[error("cannot use the TLS certificate and key: {0}")]
    Tls(String),
    /// The runtime's threads could not be started.
    #[error("cannot start the hub's runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// What to do about a port that is taken, appended to [`Error::Bind`]'s
/// message: the usual cause is starting the hub in every worker process of
/// a web server, each trying to listen on the same port.
fn bind_hint(source: &io::Error) -> &'static str {
    if source.kind() == io::ErrorKind::AddrInUse {
        ". Another process (or another hub in this one) already listens on this port, \
         e.g. the hub is started in each worker of a multi-process web server. Either pick \
         another port or start the hub in one process only; or pass reuse_port=True together \
         with a backplane (e.g. backplane=\"redis://127.0.0.1:6379/0\") in every process, so \
         they share the port and every worker gets every publication"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_in_use_names_the_cause_and_both_remedies() {
        let error = Error::Bind {
            addr: "127.0.0.1:8765".into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = error.to_string();
        assert!(text.contains("already listens on this port"), "{text}");
        assert!(text.contains("another port"), "{text}");
        assert!(text.contains("reuse_port=True"), "{text}");
        let other = Error::Bind {
            addr: "x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(!other.to_string().contains("reuse_port"));
    }
}
