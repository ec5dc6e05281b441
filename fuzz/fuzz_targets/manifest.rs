//! Manifest parsing and validation: any body, under each media type, parses or is refused
//! with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::oci::manifests::format::{Manifest, MediaType};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let media_type = MediaType::ALL[selector as usize % MediaType::ALL.len()];
    if let Ok(m) = Manifest::parse(Some(media_type.as_str()), body) {
        assert_eq!(m.media_type, media_type);
        let _ = m.blobs().count() + m.child_manifests().count();
    }
});
