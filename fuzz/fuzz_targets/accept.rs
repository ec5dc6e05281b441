//! Accept negotiation: any set of Accept headers is read; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::oci::manifests::format::{Accepted, MediaType};

fuzz_target!(|data: &str| {
    let accepted = Accepted::from_headers(data.split('\n'));
    for m in MediaType::ALL {
        let _ = accepted.accepts(m);
        let _ = MediaType::parse(data);
    }
});
