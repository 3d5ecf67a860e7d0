//! The rate this node advertises (`p2pu-rate`, docs/DESIGN.md 5.1): measured from its own
//! recent fetches (chain, stripes, plain HTTP), kept in the state dir (`rate.json`, root's,
//! 0600) so a restart advertises what was measured before it, and set as a Serf tag by the
//! agent's peers loop whenever Serf's view of this member says otherwise (a new figure, or a
//! Serf that restarted and forgot the tag). `submit` in stripes mode classes a member slow by
//! it, and a slow member is a leaf in every tree.
//!
//! The figure is the median of the last [`SAMPLES`] fetches of at least [`MIN_SAMPLE_BYTES`]:
//! one fetch slowed by a busy parent or a cold disk does not make a fast node slow, and a
//! payload too small to fill a link (its time is mostly latency) is no measure.

use super::{Result, RuntimeError};
use crate::engines::{Gossip, Member};
use crate::formats::rate;
use crate::formats::serf_names::TAG_RATE;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How many fetches the figure is the median of.
pub const SAMPLES: usize = 5;
/// The smallest fetch that counts: 1 MiB (below it a fetch is mostly round trips).
pub const MIN_SAMPLE_BYTES: u64 = 1 << 20;
/// The file in the state dir; it is root's alone, like the rest of the state.
const FILE: &str = "rate.json";
/// The most of it read back: a few samples' JSON.
const MAX_FILE: u64 = 4096;

/// One fetch as measured: its payload bytes and the milliseconds they took to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub bytes: u64,
    pub millis: u64,
}

impl Sample {
    /// Bytes per second, `None` for a fetch too small to count.
    fn rate(self) -> Option<u64> {
        if self.bytes < MIN_SAMPLE_BYTES {
            return None;
        }
        let per_sec = u128::from(self.bytes) * 1000 / u128::from(self.millis.max(1));
        Some(
            u64::try_from(per_sec)
                .unwrap_or(u64::MAX)
                .min(rate::MAX_RATE),
        )
    }
}

/// The recent fetches that count, oldest first, at most [`SAMPLES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    samples: Vec<Sample>,
}

impl Rates {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// What the state dir holds; none (nothing measured yet, or a file this p2pu cannot read:
    /// it starts over rather than stopping the agent) reads as no samples.
    pub fn load(state_dir: &Path) -> Rates {
        let path = Rates::path(state_dir);
        match crate::untrusted::read(&path, MAX_FILE) {
            Ok(bytes) => serde_json::from_slice::<Rates>(&bytes)
                .map(|mut rates| {
                    rates.samples.retain(|s| s.rate().is_some());
                    let keep = rates.samples.len().saturating_sub(SAMPLES);
                    rates.samples.drain(..keep);
                    rates
                })
                .unwrap_or_else(|e| {
                    tracing::warn!(path = %path.display(), "measured rates unreadable, starting over: {e}");
                    Rates::default()
                }),
            Err(_) => Rates::default(),
        }
    }

    /// Adds a fetch (ignored when too small to count) and keeps the newest [`SAMPLES`].
    pub fn add(&mut self, sample: Sample) {
        if sample.rate().is_none() {
            return;
        }
        self.samples.push(sample);
        let keep = self.samples.len().saturating_sub(SAMPLES);
        self.samples.drain(..keep);
    }

    /// The rate to advertise: the median of the samples (the upper one of an even count);
    /// `None` before any fetch counted.
    pub fn advertised(&self) -> Option<u64> {
        let mut rates: Vec<u64> = self.samples.iter().filter_map(|s| s.rate()).collect();
        rates.sort_unstable();
        rates.get(rates.len() / 2).copied()
    }

    /// Writes it to the state dir, 0600.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Rates::path(state_dir);
        let json = serde_json::to_vec(self).map_err(|source| RuntimeError::Encode {
            path: path.clone(),
            source,
        })?;
        crate::fsutil::write_atomic(&path, &json, 0o600)?;
        Ok(())
    }
}

/// Records a fetch of `bytes` that took `millis` in the state dir; the rate to advertise now.
pub fn record(state_dir: &Path, bytes: u64, millis: u64) -> Result<Option<u64>> {
    let mut rates = Rates::load(state_dir);
    rates.add(Sample { bytes, millis });
    rates.save(state_dir)?;
    Ok(rates.advertised())
}

/// Keeps this member's `p2pu-rate` tag at the measured figure: re-reads `rate.json` when it
/// changed, and sets the tag when Serf's view of this member (`own`, from the members list
/// the peers loop reads anyway) holds another value. Setting a tag is a gossip broadcast to
/// every member, so it happens only on a difference, not on a timer.
#[derive(Debug, Default)]
pub struct Advertiser {
    /// The file's modification time when last read, and the figure it held.
    read: Option<(SystemTime, Option<u64>)>,
}

impl Advertiser {
    /// One look: sets the tag when it differs from the measured figure. Quiet when nothing
    /// was measured yet (the tag stays unset: full-rate).
    pub fn tick(&mut self, state_dir: &Path, own: Option<&Member>, gossip: &dyn Gossip) {
        let path = Rates::path(state_dir);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let want = match (modified, self.read) {
            (None, _) => None,
            (Some(at), Some((read_at, want))) if at == read_at => want,
            (Some(at), _) => {
                let want = Rates::load(state_dir).advertised();
                self.read = Some((at, want));
                want
            }
        };
        let (Some(want), Some(own)) = (want, own) else {
            return;
        };
        let value = rate::encode(want);
        if own.tags.get(TAG_RATE) == Some(&value) {
            return;
        }
        match gossip.set_tag(TAG_RATE, &value) {
            Ok(()) => tracing::info!(rate = want, "advertising the measured rate"),
            Err(e) => tracing::warn!("setting the {TAG_RATE} tag: {}", crate::error::chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The figure is the median of the last five fetches that count: one slow fetch among
    /// fast ones does not make the node slow, small ones do not count, and the oldest fall out.
    #[test]
    fn the_advertised_rate_is_the_median_of_the_last_fetches_that_count() {
        let mut rates = Rates::default();
        assert_eq!(rates.advertised(), None);
        // 1 MiB in 1 ms is no measure of a 64 KiB payload; too small to count at all.
        rates.add(Sample {
            bytes: 64 << 10,
            millis: 1,
        });
        assert_eq!(rates.advertised(), None);
        for millis in [1000, 1000, 10_000, 1000] {
            rates.add(Sample {
                bytes: 8 * MIB,
                millis,
            });
        }
        assert_eq!(rates.advertised(), Some(8 * MIB));
        for _ in 0..SAMPLES {
            rates.add(Sample {
                bytes: 8 * MIB,
                millis: 8000,
            });
        }
        assert_eq!(rates.advertised(), Some(MIB));
        assert_eq!(rates.samples.len(), SAMPLES);
    }

    /// It survives a restart: the state dir keeps it, 0600; a file someone damaged (or an
    /// older format) starts over instead of stopping the agent, and a file with more samples
    /// than kept or absurd ones reads back bounded.
    #[test]
    fn the_measured_rate_survives_a_restart_and_a_damaged_file_starts_over() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(record(dir.path(), 4 * MIB, 2000).unwrap(), Some(2 * MIB));
        assert_eq!(Rates::load(dir.path()).advertised(), Some(2 * MIB));
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(FILE), b"{\"samples\":[{\"bytes\":\"x\"}]}").unwrap();
        assert_eq!(Rates::load(dir.path()).advertised(), None);
        let many: Vec<String> = (0..9)
            .map(|i| format!("{{\"bytes\":{},\"millis\":{}}}", u64::MAX, i))
            .collect();
        let text = format!("{{\"samples\":[{}]}}", many.join(","));
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let rates = Rates::load(dir.path());
        assert_eq!(rates.samples.len(), SAMPLES);
        assert_eq!(rates.advertised(), Some(rate::MAX_RATE));
    }

    /// The tag is set once the figure differs from what Serf shows for this member, and not
    /// again while it matches (each set is a broadcast to the fleet).
    #[test]
    fn the_tag_is_set_only_when_serf_shows_another_value() {
        let dir = tempfile::tempdir().unwrap();
        use crate::engines::fake::FakeGossip;
        let gossip = FakeGossip::default();
        let mut own = FakeGossip::member("n1", crate::engines::MemberStatus::Alive);
        let mut advertiser = Advertiser::default();
        advertiser.tick(dir.path(), Some(&own), &gossip);
        assert!(gossip.tags_set().is_empty(), "nothing measured yet");
        record(dir.path(), 3 * MIB, 1000).unwrap();
        advertiser.tick(dir.path(), Some(&own), &gossip);
        let value = (3 * MIB).to_string();
        assert_eq!(
            gossip.tags_set(),
            vec![(TAG_RATE.to_string(), value.clone())]
        );
        own.tags.insert(TAG_RATE.to_string(), value);
        advertiser.tick(dir.path(), Some(&own), &gossip);
        assert_eq!(gossip.tags_set().len(), 1);
    }
}
