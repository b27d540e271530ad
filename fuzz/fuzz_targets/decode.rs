//! Feeds arbitrary bytes to the frame decoder the way the server reads a
//! stream; panics only if a decoded frame does not re-encode to its bytes
//! or an invalid frame reports an impossible skip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    accessd_protocol::fuzz_decode_stream(data);
});
