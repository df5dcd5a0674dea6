//! The bindings: thin facades that turn the host's calls into calls of the
//! one Rust API ([`crate::Server`], [`crate::Config`]) and its answers into
//! the host's types. Neither holds hub logic of its own.
//!
//! - `python` (feature `python`): the Python module `wshub._native`, and
//!   `py_json`, its walk from Python values to JSON text (floats spelled
//!   by `float_repr`).
//! - [`ffi`]: the C ABI declared in `include/wshub.h` (`docs/c-api.md`).

pub mod ffi;
// Pure Rust, so its unit tests run without Python.
#[cfg(any(feature = "python", test))]
mod float_repr;
#[cfg(feature = "python")]
mod py_json;
#[cfg(feature = "python")]
mod python;
