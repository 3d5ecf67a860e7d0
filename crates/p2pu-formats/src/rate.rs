//! The value of the `p2pu-rate` Serf tag (`serf_names::TAG_RATE`): the rate a member
//! advertises, in bytes per second, measured from its recent fetches. Plain decimal ASCII
//! digits, no sign, no leading zero, at most [`MAX_RATE`]; what `submit` in stripes mode
//! classes members slow by (`topology::classify`: under half the median).
//!
//! Any keyring holder sets its own tags, so a value is read strictly: anything but canonical
//! digits is no rate at all (the member counts as full-rate, as one that advertises none),
//! and a value above [`MAX_RATE`] is read as [`MAX_RATE`]. Either way one member's value
//! moves the median of the advertised rates one place at most, whatever it says.

/// The highest rate a member may advertise: 1 TiB/s, far above any link, so an honest value
/// is never cut and a liar's absurd one weighs no more than any other high one. 13 digits,
/// which keeps the tag within Serf's 512 bytes of tags with room to spare.
pub const MAX_RATE: u64 = 1 << 40;

/// The most characters a tag value is read from: `u64::MAX` has 20 digits.
const MAX_DIGITS: usize = 20;

/// The tag's value for `rate` bytes/s (clamped to [`MAX_RATE`]).
pub fn encode(rate: u64) -> String {
    rate.min(MAX_RATE).to_string()
}

/// The rate a tag value advertises, clamped to [`MAX_RATE`]; `None` unless it is canonical
/// decimal digits (`0`, or no leading zero), at most 20 of them, fitting a `u64`.
pub fn decode(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_DIGITS
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return None;
    }
    text.parse::<u64>().ok().map(|rate| rate.min(MAX_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured values: what an honest agent writes, and what a compromised member might
    /// advertise instead (signs, spaces, hex, floats, overflow) that `str::parse` would
    /// partly take (`+5`) or that would weigh more than a high rate.
    #[test]
    fn only_canonical_digits_are_a_rate_and_absurd_ones_are_clamped() {
        for (text, want) in [
            ("0", Some(0)),
            ("6250000", Some(6_250_000)),
            ("1099511627776", Some(MAX_RATE)),
            ("1099511627777", Some(MAX_RATE)),
            ("18446744073709551615", Some(MAX_RATE)),
            ("18446744073709551616", None),
            ("99999999999999999999", None),
            ("000000000000000000001", None),
            ("", None),
            ("+5", None),
            ("-5", None),
            (" 5", None),
            ("5 ", None),
            ("05", None),
            ("0x10", None),
            ("1e9", None),
            ("1.5", None),
            ("١٢", None),
        ] {
            assert_eq!(decode(text), want, "{text:?}");
        }
        assert_eq!(encode(u64::MAX), "1099511627776");
        assert_eq!(encode(6_250_000), "6250000");
    }

    proptest! {
        /// What an agent writes reads back as itself, clamped.
        #[test]
        fn encode_round_trips_clamped(rate in any::<u64>()) {
            prop_assert_eq!(decode(&encode(rate)), Some(rate.min(MAX_RATE)));
        }

        /// Whatever a member puts in the tag, it reads as no rate or as one within the clamp
        /// (digits often, so the accepting branch is reached).
        #[test]
        fn any_value_is_none_or_within_the_clamp(
            text in prop_oneof!["[0-9]{1,21}", "\\PC{0,24}"]
        ) {
            if let Some(rate) = decode(&text) {
                prop_assert!(rate <= MAX_RATE);
                prop_assert_eq!(encode(rate), text.parse::<u64>().unwrap().min(MAX_RATE).to_string());
            }
        }
    }
}
