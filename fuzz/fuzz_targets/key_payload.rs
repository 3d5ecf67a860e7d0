//! Fuzzes the key payloads a `key` announcement carries (a `.pub` line to trust, a
//! `p2pu-revoke:` line) and the secret key file parser. Nothing may panic; what parses is one
//! line without control characters, writes back to text that parses to the same thing, never
//! trusts a weak key, and survives the round trip through a keys directory (trusted or revoked
//! after `add`/`revoke`, as `load` reads it back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pu::keys::{
    parse_secret, revocation_text, secret_to_text, KeyPayload, PublicKey, TrustedKeys,
    TrustedKeysDir,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn keys_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("p2pu-fuzz-keys-")
            .tempdir_in("/dev/shm")
            .expect("fixture dir")
            .keep()
    })
}

fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("listing") {
        std::fs::remove_file(entry.expect("entry").path()).expect("cleaning up");
    }
}

fn one_clean_line(text: &str) {
    assert!(!text.chars().any(char::is_control), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(secret) = parse_secret(data, "fuzz") {
        let again = parse_secret(secret_to_text(&secret).as_bytes(), "again").expect("reparse");
        assert_eq!(again.to_bytes(), secret.to_bytes());
    }
    if let Ok(public) = PublicKey::parse(data, "fuzz") {
        assert!(!public.key.is_weak());
        one_clean_line(&public.comment);
        assert_eq!(
            PublicKey::parse(public.to_text().as_bytes(), "again").ok(),
            Some(public)
        );
    }
    let Ok(payload) = KeyPayload::parse(data, "fuzz") else {
        return;
    };
    let dir = keys_dir();
    match payload {
        KeyPayload::Trust(public) => {
            assert!(!public.key.is_weak());
            one_clean_line(&public.comment);
            let text = public.to_text();
            assert_eq!(
                KeyPayload::parse(text.as_bytes(), "again").ok(),
                Some(KeyPayload::Trust(public.clone()))
            );
            TrustedKeys::add(dir, &public).expect("trusting a parsed key");
            let loaded = TrustedKeys::load(dir).expect("loading what add wrote");
            assert_eq!(loaded.get(&public.kid()).map(|t| &t.key), Some(&public));
        }
        KeyPayload::Revoke { kid, reason } => {
            one_clean_line(&reason);
            let text = revocation_text(kid, &reason);
            assert_eq!(
                KeyPayload::parse(text.as_bytes(), "again").ok(),
                Some(KeyPayload::Revoke {
                    kid,
                    reason: reason.clone()
                })
            );
            TrustedKeys::revoke(dir, kid, &reason).expect("revoking a parsed kid");
            assert!(TrustedKeys::load(dir).expect("loading").is_revoked(&kid));
        }
    }
    clear(dir);
});
