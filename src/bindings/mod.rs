//! The bindings: thin facades that turn the host's calls into calls of the
//! one Rust API ([`crate::Server`], [`crate::Config`]) and its answers into
//! the host's types. Neither holds hub logic of its own.
//!
//! - `python` (feature `python`): the Python module `wshub._native`.
//! - [`ffi`]: the C ABI declared in `include/wshub.h` (`docs/c-api.md`).

pub mod ffi;
#[cfg(feature = "python")]
mod python;
