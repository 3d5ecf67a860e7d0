//! STUN (RFC 5389) Binding requests and responses through the maintained `stun_codec` crate:
//! the proxy answers any standard client with XOR-MAPPED-ADDRESS alone, and the NAT client asks
//! the proxy (or any STUN server) for its mapped address.
//!
//! The proxy answers anyone, so a spoofed request makes it a reflector; the answer is kept to
//! what RFC 5389 requires (32 bytes for IPv4, 44 for IPv6), and the client's own requests are
//! padded (SOFTWARE) to at least that, so fleet traffic is never amplified. A bare 20-byte
//! request from another client (coturn's sends one) gets 32 bytes: 1.6 times, against 3.4
//! times with the MAPPED-ADDRESS, SOFTWARE and FINGERPRINT answers carried before.

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{Fingerprint, MappedAddress, Software, XorMappedAddress};
use stun_codec::rfc5389::{methods::BINDING, Attribute};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

use std::net::SocketAddr;

/// Long enough that a request with it and FINGERPRINT is no smaller than the largest answer
/// ([`MAX_ANSWER_LEN`]); the test `our_requests_are_never_smaller_than_the_answer` holds it.
const SOFTWARE: &str = concat!("p2pu ", env!("CARGO_PKG_VERSION"), " nat-client");
/// Header (20) + XOR-MAPPED-ADDRESS for IPv6 (4 + 20).
pub const MAX_ANSWER_LEN: usize = 44;
/// RFC 5389's magic cookie, at bytes 4..8 of every message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether `bytes` may be STUN: the two top bits are zero and the magic cookie is in place
/// (RFC 5389 section 6; RFC 7983 demultiplexing).
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes.len() >= 20
        && bytes.first().is_some_and(|b| b & 0xC0 == 0)
        && bytes.get(4..8) == Some(&MAGIC_COOKIE[..])
}

/// A new Binding request and its transaction id.
pub fn binding_request() -> Result<(TransactionId, Vec<u8>), String> {
    let id = TransactionId::new(rand::random());
    let mut message = Message::<Attribute>::new(MessageClass::Request, BINDING, id);
    message.add_attribute(Software::new(SOFTWARE.to_owned()).map_err(|e| e.to_string())?);
    let fingerprint = Fingerprint::new(&message).map_err(|e| e.to_string())?;
    message.add_attribute(fingerprint);
    let bytes = MessageEncoder::new()
        .encode_into_bytes(message)
        .map_err(|e| e.to_string())?;
    Ok((id, bytes))
}

/// The success response to a Binding request from `from`; `None` when `bytes` is not a valid
/// Binding request (those get no answer).
pub fn answer_binding(bytes: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let request = MessageDecoder::<Attribute>::new()
        .decode_from_bytes(bytes)
        .ok()?
        .ok()?;
    if request.class() != MessageClass::Request || request.method() != BINDING {
        return None;
    }
    let mut response = Message::<Attribute>::new(
        MessageClass::SuccessResponse,
        BINDING,
        request.transaction_id(),
    );
    // Only what a client needs: MAPPED-ADDRESS is for RFC 3489 clients, which send no magic
    // cookie and never get here; SOFTWARE and FINGERPRINT are optional (RFC 5389 section 15).
    response.add_attribute(XorMappedAddress::new(from));
    MessageEncoder::new().encode_into_bytes(response).ok()
}

/// The mapped address in a Binding success response to transaction `id`; `None` for anything
/// else (another transaction, an error response, a broken message).
pub fn mapped_address(bytes: &[u8], id: TransactionId) -> Option<SocketAddr> {
    let response = MessageDecoder::<Attribute>::new()
        .decode_from_bytes(bytes)
        .ok()?
        .ok()?;
    if response.class() != MessageClass::SuccessResponse
        || response.method() != BINDING
        || response.transaction_id() != id
    {
        return None;
    }
    response
        .get_attribute::<XorMappedAddress>()
        .map(|a| a.address())
        .or_else(|| {
            response
                .get_attribute::<MappedAddress>()
                .map(|a| a.address())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binding_round_trip() {
        let (id, request) = binding_request().unwrap();
        assert!(looks_like_stun(&request));
        let from: SocketAddr = "100.64.0.2:40000".parse().unwrap();
        let response = answer_binding(&request, from).unwrap();
        assert!(looks_like_stun(&response));
        assert_eq!(mapped_address(&response, id), Some(from));
        assert_eq!(mapped_address(&response, TransactionId::new([0; 12])), None);
    }

    /// RFC 5769 section 2.1: a Binding request from a real client, with FINGERPRINT.
    #[test]
    fn answers_the_rfc5769_sample_request() {
        let sample: [u8; 108] = [
            0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e,
            0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24,
            0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1,
            0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68,
            0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c,
            0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5,
            0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
        ];
        assert!(looks_like_stun(&sample));
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let response = answer_binding(&sample, from).unwrap();
        let id = TransactionId::new([
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        assert_eq!(mapped_address(&response, id), Some(from));
    }

    #[test]
    fn a_broken_fingerprint_gets_no_answer() {
        let (_, mut request) = binding_request().unwrap();
        let last = request.len() - 1;
        request[last] ^= 0xff;
        assert_eq!(
            answer_binding(&request, "10.0.0.1:1".parse().unwrap()),
            None
        );
    }

    /// Regression (security issue #13, item 8): answers were 3.4 times the request, which made
    /// the proxy a reflector for spoofed requests.
    #[test]
    fn our_requests_are_never_smaller_than_the_answer() {
        let (id, request) = binding_request().unwrap();
        for from in ["100.64.0.2:40000", "[2001:db8::1]:40000"] {
            let from: SocketAddr = from.parse().unwrap();
            let answer = answer_binding(&request, from).unwrap();
            assert!(answer.len() <= MAX_ANSWER_LEN);
            assert!(
                answer.len() <= request.len(),
                "answer {} bytes, request {} bytes",
                answer.len(),
                request.len()
            );
            assert_eq!(mapped_address(&answer, id), Some(from));
        }
    }

    /// What coturn's `turnutils_stunclient` sends: a bare header. Its answer carries one
    /// attribute, 32 bytes for IPv4 (1.6 times the request).
    #[test]
    fn a_bare_request_gets_the_smallest_answer() {
        let id = TransactionId::new([3; 12]);
        let message = Message::<Attribute>::new(MessageClass::Request, BINDING, id);
        let request = MessageEncoder::new().encode_into_bytes(message).unwrap();
        assert_eq!(request.len(), 20);
        let from: SocketAddr = "100.64.0.2:40000".parse().unwrap();
        let answer = answer_binding(&request, from).unwrap();
        assert_eq!(answer.len(), 32);
        assert_eq!(mapped_address(&answer, id), Some(from));
    }

    /// A Binding request as clients send them: bare (coturn's), with SOFTWARE, with
    /// FINGERPRINT, or both (ours).
    fn request(id: TransactionId, software: Option<String>, fingerprint: bool) -> Vec<u8> {
        let mut message = Message::<Attribute>::new(MessageClass::Request, BINDING, id);
        if let Some(software) = software {
            message.add_attribute(Software::new(software).unwrap());
        }
        if fingerprint {
            let fingerprint = Fingerprint::new(&message).unwrap();
            message.add_attribute(fingerprint);
        }
        MessageEncoder::new().encode_into_bytes(message).unwrap()
    }

    proptest! {
        /// Every Binding request gets an answer, and whatever gets an answer (a request, one
        /// with a changed byte, raw bytes) gets a small one that tells the asker its own
        /// address under its own transaction id.
        #[test]
        fn stun_answers_are_small_and_name_the_asker(
            id in any::<[u8; 12]>(),
            software in proptest::option::of("[a-z0-9 .-]{0,60}"),
            fingerprint in any::<bool>(),
            ip in any::<std::net::IpAddr>(),
            port in any::<u16>(),
            change in proptest::option::of((any::<proptest::sample::Index>(), 1u8..)),
            raw in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let from = SocketAddr::new(ip, port);
            let mut asked = request(TransactionId::new(id), software, fingerprint);
            if let Some((at, flip)) = change {
                let at = at.index(asked.len());
                asked[at] ^= flip;
            } else {
                prop_assert!(answer_binding(&asked, from).is_some(), "a Binding request got no answer");
            }
            for bytes in [&asked, &raw] {
                if let Some(answer) = answer_binding(bytes, from) {
                    prop_assert!(answer.len() <= MAX_ANSWER_LEN, "{} bytes", answer.len());
                    let id: [u8; 12] = bytes[8..20].try_into().unwrap();
                    prop_assert_eq!(mapped_address(&answer, TransactionId::new(id)), Some(from));
                }
            }
        }
    }
}
