//! Credentials and tokens: any Authorization header (Basic, Bearer with any JWT-like text) is
//! checked and refused or accepted; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::auth::AuthConfig;
use wharf::auth::secret::PasswordHash;
use wharf::base::http::Headers;

fuzz_target!(|data: &str| {
    // Refusals are logged; millions of them would only slow the run.
    wharf::base::log::set_sink(|_| {});
    thread_local! {
        static AUTH: AuthConfig = {
            // One iteration of PBKDF2, so that Basic attempts stay fast.
            let users = format!(r#"{{"u":"{}"}}"#, PasswordHash::new("pw", b"salt", 1));
            let vars = [
                ("WHARF_RULES", r#"[{"repositories": "*", "anonymous": ["pull"], "users": {"u": ["push"]}}]"#.to_owned()),
                ("WHARF_USERS", users),
                ("WHARF_TOKEN_SECRET", "a fuzzing token secret of some forty chars".to_owned()),
            ];
            AuthConfig::from_vars(&|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()))
                .expect("config")
                .expect("rules set")
        };
    }
    AUTH.with(|auth| {
        for value in [data.to_owned(), format!("Bearer {data}"), format!("Basic {data}")] {
            let _ = auth.identify(&Headers::new().with("Authorization", &value), 1_800_000_000);
        }
    });
});
