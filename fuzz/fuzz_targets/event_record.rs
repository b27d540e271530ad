//! Feeds arbitrary payloads, framed with their true length and checksum, to
//! the access-event record reader (what `events tail`, the shipper and the
//! console read from the spool); panics only if the reader accepts a record
//! it cannot account for or returns an event that does not read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    accessd_engine::fuzz_read_record(data);
});
