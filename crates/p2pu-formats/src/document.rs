//! The envelope every signed text shares (announcements, heartbeats, control statements, key
//! statements, root documents): one line (a trailing newline ignored), at most the format's
//! longest text, a prefix naming the format, then the unpadded URL-safe base64 of a bencoded
//! dictionary. [`Envelope::bytes`] and [`Envelope::text`] are that line for all of them. Key
//! statements and root documents also share the rest: a dictionary whose `v` is 1 and whose
//! keys are the format's own ([`Envelope::open`]), and the signing, combining and counting of
//! their signatures ([`SignedDocument`]). What the fields mean, and that the text is the
//! canonical encoding of what was read, are each format's to check.

use super::announcement::{add_sig, combine_sigs, valid_signers, AnnouncementError};
use super::bencode::{self, Value};
use crate::keys::KeyId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// The line around the bencoding is not the format's: each format turns this into its own
/// error (its name, its limit), so an operator reads which text was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("does not start with `{prefix}`")]
    BadPrefix { prefix: &'static str },
    #[error("is {len} bytes, longer than {max}")]
    TooLong { len: usize, max: usize },
    #[error("is not unpadded URL-safe base64")]
    BadBase64(#[source] base64::DecodeError),
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("is not canonical bencode")]
    Bencode(#[source] bencode::BencodeError),
    #[error("is not a dictionary")]
    NotADict,
    #[error("has unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("lacks key `{key}`")]
    MissingKey { key: &'static str },
    #[error("`{key}` is not {want}")]
    Wrong {
        key: &'static str,
        want: &'static str,
    },
    #[error("format is version {got}, this p2pu reads version 1")]
    UnsupportedVersion { got: i64 },
}

use DocumentError as E;
use EnvelopeError as L;

/// One format's envelope: its prefix, its longest text, and the keys its dictionary may hold.
pub struct Envelope {
    pub prefix: &'static str,
    pub max_len: usize,
    pub keys: &'static [&'static str],
}

impl Envelope {
    /// The dictionary's bytes from a text (one trailing newline allowed), refused unread past
    /// the longest text.
    pub fn bytes(&self, text: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if text.len() > self.max_len {
            let (len, max) = (text.len(), self.max_len);
            return Err(L::TooLong { len, max });
        }
        let encoded = text
            .strip_prefix(self.prefix.as_bytes())
            .ok_or(L::BadPrefix {
                prefix: self.prefix,
            })?;
        URL_SAFE_NO_PAD.decode(encoded).map_err(L::BadBase64)
    }

    /// The line for a bencoding, without a newline: the prefix and the unpadded URL-safe base64.
    pub fn text(&self, bencode: &[u8]) -> String {
        format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(bencode))
    }

    /// The dictionary in `bytes`, version 1, with none but this format's keys (the version is
    /// read first: a later one may well have other keys).
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<Fields<'a>, DocumentError> {
        let value = bencode::parse(bytes).map_err(E::Bencode)?;
        let bencode::Kind::Dict(entries) = &value.kind else {
            return Err(E::NotADict);
        };
        match value.get("v").map(|v| v.as_int()) {
            Some(Some(1)) => {}
            Some(Some(got)) => return Err(E::UnsupportedVersion { got }),
            Some(None) => {
                return Err(E::Wrong {
                    key: "v",
                    want: "an integer",
                })
            }
            None => return Err(E::MissingKey { key: "v" }),
        }
        if let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| !self.keys.iter().any(|known| known.as_bytes() == *k))
        {
            let key = String::from_utf8_lossy(key).into_owned();
            return Err(E::UnknownKey { key });
        }
        Ok(Fields(value))
    }
}

/// A document signed by several keys, each over its bencoding without `sigs` (key statements,
/// root documents): the signing, combining and counting they share, written once.
pub trait SignedDocument: Sized {
    /// The document's line.
    const ENVELOPE: Envelope;
    /// What two of them are called in an error (`key statements`).
    const WHAT: &'static str;
    /// The most signatures one may carry.
    const MAX_SIGS: usize;
    type Error;

    /// The canonical bencoding, with or without `sigs`.
    fn bencode(&self, with_sigs: bool) -> Vec<u8>;
    /// The signatures, sorted by key id.
    fn sigs_mut(&mut self) -> &mut Vec<(KeyId, [u8; 64])>;
    fn sigs(&self) -> &[(KeyId, [u8; 64])];
    /// The document's error for a signature that cannot be added or taken.
    fn sigs_error(error: AnnouncementError) -> Self::Error;

    /// What each signature signs.
    fn signed_bytes(&self) -> Vec<u8> {
        self.bencode(false)
    }

    fn to_bencode(&self) -> Vec<u8> {
        self.bencode(true)
    }

    /// The one-line text, with a trailing newline.
    fn to_text(&self) -> String {
        format!("{}\n", Self::ENVELOPE.text(&self.to_bencode()))
    }

    /// Adds `signer`'s signature (again by the same key changes nothing).
    fn sign(&mut self, signer: &SigningKey) -> Result<(), Self::Error> {
        let signed = self.signed_bytes();
        add_sig(self.sigs_mut(), &signed, signer, Self::MAX_SIGS).map_err(Self::sigs_error)
    }

    /// Takes the signatures of `other`, which must sign the same (`--with-sig`).
    fn combine(&mut self, other: &Self) -> Result<(), Self::Error> {
        let (signed, other_signed) = (self.signed_bytes(), other.signed_bytes());
        combine_sigs(
            (self.sigs_mut(), &signed),
            (other.sigs(), &other_signed),
            Self::WHAT,
            Self::MAX_SIGS,
        )
        .map_err(Self::sigs_error)
    }

    /// The distinct keys `key_of` knows whose signature is valid.
    fn signers(&self, key_of: impl Fn(&KeyId) -> Option<VerifyingKey>) -> Vec<KeyId> {
        valid_signers(&self.signed_bytes(), self.sigs(), key_of)
    }
}

/// The three [`SignedDocument`] items every such document writes the same way: its `sigs`
/// field, read and written, and its `Sigs` error variant for a signature that cannot be added
/// or taken.
macro_rules! sigs_field {
    ($error:ident) => {
        fn sigs(&self) -> &[(KeyId, [u8; 64])] {
            &self.sigs
        }

        fn sigs_mut(&mut self) -> &mut Vec<(KeyId, [u8; 64])> {
            &mut self.sigs
        }

        fn sigs_error(error: AnnouncementError) -> $error {
            $error::Sigs(error)
        }
    };
}
pub(crate) use sigs_field;

/// An opened document's dictionary.
pub struct Fields<'a>(Value<'a>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &'static str) -> Result<&Value<'a>, DocumentError> {
        self.0.get(key).ok_or(E::MissingKey { key })
    }

    pub fn bytes(&self, key: &'static str) -> Result<&'a [u8], DocumentError> {
        self.get(key)?.as_bytes().ok_or(E::Wrong {
            key,
            want: "a byte string",
        })
    }

    /// A byte string of exactly `N` bytes (`want` says so in the error).
    pub fn fixed<const N: usize>(
        &self,
        key: &'static str,
        want: &'static str,
    ) -> Result<[u8; N], DocumentError> {
        <[u8; N]>::try_from(self.bytes(key)?).map_err(|_| E::Wrong { key, want })
    }

    pub fn uint(&self, key: &'static str, want: &'static str) -> Result<u64, DocumentError> {
        (self.get(key)?.as_int())
            .and_then(|i| u64::try_from(i).ok())
            .ok_or(E::Wrong { key, want })
    }

    pub fn list(&self, key: &'static str) -> Result<&[Value<'a>], DocumentError> {
        self.get(key)?.as_list().ok_or(E::Wrong {
            key,
            want: "a list",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: Envelope = Envelope {
        prefix: "p2pu-test1:",
        max_len: 64,
        keys: &["n", "v"],
    };

    fn text(bencode: &[u8]) -> Vec<u8> {
        format!("p2pu-test1:{}", URL_SAFE_NO_PAD.encode(bencode)).into_bytes()
    }

    #[test]
    fn opens_version_1_with_known_keys_and_refuses_the_rest() {
        let bytes = ENVELOPE.bytes(&text(b"d1:ni7e1:vi1ee")).unwrap();
        assert_eq!(ENVELOPE.open(&bytes).unwrap().uint("n", "n").unwrap(), 7);
        let refused = |bencode: &[u8]| {
            let bytes = ENVELOPE.bytes(&text(bencode)).unwrap();
            ENVELOPE.open(&bytes).err().unwrap()
        };
        assert!(matches!(
            refused(b"d1:vi2ee"),
            E::UnsupportedVersion { got: 2 }
        ));
        assert!(matches!(refused(b"d1:ni7ee"), E::MissingKey { key: "v" }));
        assert!(matches!(refused(b"d1:vi1e1:xi0ee"), E::UnknownKey { .. }));
        assert!(matches!(refused(b"li1ee"), E::NotADict));
        assert!(matches!(
            ENVELOPE.bytes(b"p2pu-other:ZA"),
            Err(L::BadPrefix { .. })
        ));
        assert!(matches!(
            ENVELOPE.bytes(&[b'a'; 65]),
            Err(L::TooLong { len: 65, max: 64 })
        ));
    }
}
