//! Recording fakes of the engine traits, for in-process tests of the commands: each answers as
//! the test set it up and remembers what it was asked to do.

use super::puppet::ModuleInstalled;
use super::{
    Added, Applier, ApplyReport, ApplyStatus, Gossip, Member, MemberStatus, PuppetError, SerfError,
    Session, TorrentEngine, TorrentStatus, TransmissionError,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A torrent engine that accepts every torrent and keeps what was added.
#[derive(Default)]
pub struct FakeTorrent {
    pub added: Mutex<Vec<Add>>,
}

/// One `add_metainfo` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub metainfo: Vec<u8>,
    pub download_dir: Option<PathBuf>,
    pub paused: bool,
}

impl FakeTorrent {
    pub fn added(&self) -> Vec<Add> {
        self.added.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl TorrentEngine for FakeTorrent {
    fn session_get(&self) -> Result<Session, TransmissionError> {
        Ok(Session {
            version: "fake".into(),
            rpc_version: 17,
            download_dir: PathBuf::from("/nonexistent"),
        })
    }
    fn add_magnet(&self, _: &str, _: Option<&Path>, _: bool) -> Result<Added, TransmissionError> {
        Ok(added())
    }
    fn add_metainfo(
        &self,
        metainfo: &[u8],
        download_dir: Option<&Path>,
        paused: bool,
    ) -> Result<Added, TransmissionError> {
        let call = Add {
            metainfo: metainfo.to_vec(),
            download_dir: download_dir.map(Path::to_path_buf),
            paused,
        };
        self.added
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
        Ok(added())
    }
    fn get(&self, _: &[String]) -> Result<Vec<TorrentStatus>, TransmissionError> {
        Ok(Vec::new())
    }
    fn start(&self, _: &str) -> Result<(), TransmissionError> {
        Ok(())
    }
    fn stop(&self, _: &str) -> Result<(), TransmissionError> {
        Ok(())
    }
    fn verify(&self, _: &str) -> Result<(), TransmissionError> {
        Ok(())
    }
    fn remove(&self, _: &str, _: bool) -> Result<(), TransmissionError> {
        Ok(())
    }
}

fn added() -> Added {
    Added {
        id: 1,
        hash_string: String::new(),
        name: String::new(),
        duplicate: false,
    }
}

/// A gossip layer with fixed members and fixed query answers, keeping the events sent and the
/// queries asked.
#[derive(Default)]
pub struct FakeGossip {
    pub members: Vec<Member>,
    /// What every query gets back: `(node, answer)`.
    pub answers: Vec<(String, String)>,
    /// Each `user_event`: name, payload, coalesce.
    pub events: Mutex<Vec<(String, Vec<u8>, bool)>>,
    /// Each `query`: its name.
    pub queries: Mutex<Vec<String>>,
    /// Each `join`: the addresses.
    pub joins: Mutex<Vec<Vec<String>>>,
    /// How each `join` treated the members' buffered events.
    pub join_events: Mutex<Vec<super::JoinEvents>>,
    /// Each `set_tag`: key and value.
    pub tags: Mutex<Vec<(String, String)>>,
}

impl FakeGossip {
    /// An alive member at 10.0.0.1:7946 without tags.
    pub fn member(name: &str, status: MemberStatus) -> Member {
        Member {
            name: name.into(),
            addr: [10, 0, 0, 1].into(),
            port: 7946,
            status,
            tags: Default::default(),
        }
    }

    pub fn events(&self) -> Vec<(String, Vec<u8>, bool)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn tags_set(&self) -> Vec<(String, String)> {
        self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn queries(&self) -> Vec<String> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Gossip for FakeGossip {
    fn members(&self) -> Result<Vec<Member>, SerfError> {
        Ok(self.members.clone())
    }
    fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), SerfError> {
        let event = (name.to_string(), payload.to_vec(), coalesce);
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        Ok(())
    }
    fn join(&self, addrs: &[String], events: super::JoinEvents) -> Result<(), SerfError> {
        self.join_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(events);
        self.joins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addrs.to_vec());
        Ok(())
    }
    fn set_tag(&self, key: &str, value: &str) -> Result<(), SerfError> {
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.to_string(), value.to_string()));
        Ok(())
    }
    fn query(&self, name: &str, _: &[u8], _: Duration) -> Result<Vec<(String, String)>, SerfError> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
        Ok(self.answers.clone())
    }
}

/// An applier that answers with the output a test gives, as Puppet would: `fail_with` set, every
/// call fails with that output (exit 1); else it succeeds with `output`. Keeps what it was asked.
#[derive(Default)]
pub struct FakeApplier {
    pub fail_with: Option<String>,
    pub output: String,
    /// Each call: `validate`, `noop`, `apply` or `module install`, and the path.
    pub calls: Mutex<Vec<(&'static str, PathBuf)>>,
}

impl FakeApplier {
    pub fn calls(&self) -> Vec<(&'static str, PathBuf)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn call(&self, what: &'static str, path: &Path) -> Result<String, String> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((what, path.to_path_buf()));
        match &self.fail_with {
            Some(output) => Err(output.clone()),
            None => Ok(self.output.clone()),
        }
    }

    fn report(output: String) -> ApplyReport {
        ApplyReport {
            status: ApplyStatus::Changed,
            exit_code: 2,
            output,
            elapsed: Duration::ZERO,
        }
    }
}

impl Applier for FakeApplier {
    fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        self.call("apply", manifest)
            .map(FakeApplier::report)
            .map_err(|output| PuppetError::Compile {
                command: "fake apply".into(),
                manifest: manifest.to_path_buf(),
                output,
            })
    }
    fn module_install(&self, tarball: &Path, _: &Path) -> Result<ModuleInstalled, PuppetError> {
        self.call("module install", tarball)
            .map(|output| ModuleInstalled { output })
            .map_err(|output| PuppetError::Failed {
                command: "fake module install".into(),
                status: "exit status: 1".into(),
                output,
            })
    }
    fn validate(&self, manifest: &Path) -> Result<(), PuppetError> {
        self.call("validate", manifest)
            .map(|_| ())
            .map_err(|output| PuppetError::Invalid {
                command: "fake parser validate".into(),
                manifest: manifest.to_path_buf(),
                output,
            })
    }
    fn noop(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        self.call("noop", manifest)
            .map(FakeApplier::report)
            .map_err(|output| PuppetError::Compile {
                command: "fake apply --noop".into(),
                manifest: manifest.to_path_buf(),
                output,
            })
    }
}
