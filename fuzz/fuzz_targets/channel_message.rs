//! The paravirtual channel's message decoder: arbitrary guest→host mailbox
//! contents through `Message::decode`, and the payload decoders (HELLO,
//! STATUS) on arbitrary payloads.
//!
//! Checks: no panic; a message that decodes lies inside the mailbox,
//! re-encodes to the same bytes (bar the reserved field) and decodes again
//! to itself; a refused one carries its header whenever there were enough
//! bytes for one, and an errno; the payload codecs round-trip.

#![no_main]

use cellvm::channel::protocol::{
    decode_status, encode_status, read_u32, Header, Hello, Message, HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Message::decode(data) {
        Ok(msg) => {
            let end = HEADER_LEN + msg.payload.len();
            assert!(end <= data.len());
            let bytes = msg.encode();
            assert_eq!(bytes.len(), end);
            assert_eq!(bytes[..20], data[..20], "header changed");
            assert_eq!(
                bytes[HEADER_LEN..],
                data[HEADER_LEN..end],
                "payload changed"
            );
            assert_eq!(Message::decode(&bytes).as_ref(), Ok(&msg));
        }
        Err((header, e)) => {
            assert!(e.errno() > 0);
            let _ = e.to_string();
            if data.len() >= HEADER_LEN {
                let h = header.expect("a refused message keeps its header");
                assert_eq!(Some(h), Header::decode(data));
                assert_eq!(h.encode()[..], data[..HEADER_LEN]);
            } else {
                assert!(header.is_none());
            }
        }
    }

    if let Some(hello) = Hello::decode(data) {
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
        assert_eq!(hello.encode()[..], data[..8]);
    }
    if let Some((count, ids)) = decode_status(data) {
        assert!(ids.len() <= count as usize);
        assert!(4 + 4 * ids.len() <= data.len());
        let n = ids.len() as u32;
        assert_eq!(decode_status(&encode_status(&ids)), Some((n, ids)));
    }
    if let Some(&at) = data.first() {
        let at = usize::from(at);
        assert_eq!(read_u32(data, at).is_some(), at + 4 <= data.len());
    }
    let _ = read_u32(data, usize::MAX - 1);
});
