//! Any handshake query string through `topics_from_query`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The query reaches the parser as the URI's text, always UTF-8.
    if let Ok(query) = std::str::from_utf8(data) {
        wshub_fuzz::check_query(query);
    }
});
