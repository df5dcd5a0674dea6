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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried to listen on.
        addr: String,
        /// The OS error, whose errno the bindings pass on.
        #[source]
        source: io::Error,
    },
    /// The runtime's threads could not be started.
    #[error("cannot start the hub's runtime: {0}")]
    Runtime(#[source] io::Error),
}
