//! Whether a file on disk already says what p2pu would write.

use crate::render::Compare;
use serde_json::Value;
use sha1::{Digest, Sha1};

pub fn same(how: Compare, old: &[u8], new: &[u8]) -> bool {
    match how {
        Compare::Bytes => old == new,
        Compare::TransmissionSettings => same_settings(old, new),
    }
}

/// True when every key p2pu sets has the same value in `old`; keys Transmission added on its
/// own rewrite are its defaults and do not count. The password may be stored salted-hashed.
fn same_settings(old: &[u8], new: &[u8]) -> bool {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (
        serde_json::from_slice::<Value>(old),
        serde_json::from_slice::<Value>(new),
    ) else {
        return false;
    };
    new.iter()
        .all(|(key, want)| match (key.as_str(), old.get(key), want) {
            ("rpc-password", Some(Value::String(have)), Value::String(plain)) => {
                have == plain || transmission_password_matches(have, plain)
            }
            (_, Some(have), want) => same_value(have, want),
            (_, None, _) => false,
        })
}

/// Transmission writes integers and floats alike as JSON numbers; compare numerically.
fn same_value(have: &Value, want: &Value) -> bool {
    match (have.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => have == want,
    }
}

/// Transmission 3.00 stores `{` + hex SHA-1(password + salt) + salt (8 characters).
pub fn transmission_password_matches(stored: &str, plain: &str) -> bool {
    let Some(rest) = stored.strip_prefix('{') else {
        return false;
    };
    if rest.len() <= 40 || !rest.is_char_boundary(40) {
        return false;
    }
    let (hash, salt) = rest.split_at(40);
    let mut sha = Sha1::new();
    sha.update(plain.as_bytes());
    sha.update(salt.as_bytes());
    hex::encode(sha.finalize()).eq_ignore_ascii_case(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_password_is_the_same_setting() {
        let salt = "abcdEFGH";
        let mut sha = Sha1::new();
        sha.update(b"s3cret");
        sha.update(salt.as_bytes());
        let stored = format!("{{{}{salt}", hex::encode(sha.finalize()));
        assert!(transmission_password_matches(&stored, "s3cret"));
        assert!(!transmission_password_matches(&stored, "other"));
        assert!(!transmission_password_matches("{short", "s3cret"));
        let old =
            format!(r#"{{"rpc-password": "{stored}", "rpc-port": 9091, "added-by-daemon": 1}}"#);
        let new = br#"{"rpc-password": "s3cret", "rpc-port": 9091}"#;
        assert!(same(Compare::TransmissionSettings, old.as_bytes(), new));
        assert!(!same(
            Compare::TransmissionSettings,
            old.as_bytes(),
            br#"{"rpc-port": 9092}"#
        ));
        assert!(!same(Compare::TransmissionSettings, b"not json", new));
    }
}
