//! Nearly valid client messages: right and wrong field kinds, extra and
//! duplicate fields, deep nesting, truncation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub_fuzz::NearValid;

fuzz_target!(|message: NearValid| {
    message.check();
});
