//! Routing: any request line is split, percent-decoded and routed, or refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::base::http::{Headers, Method, Request};
use wharf::base::router::Route;

fuzz_target!(|data: &str| {
    let _ = Route::parse(data);
    let request = Request::new(Method::Get, data, Headers::new(), ());
    let _ = Route::parse(&request.path);
    let _ = Request::from_url(Method::Get, data, Headers::new(), ());
});
