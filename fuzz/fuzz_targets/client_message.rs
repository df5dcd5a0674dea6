//! Any bytes a client could put in a text frame (tungstenite hands over
//! only valid UTF-8) through `parse_client_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        wshub_fuzz::check_client_message(text);
    }
});
