//! `p2pu complete names|nodes`: the words the shell completions offer for an update name
//! (this node's state) or a node name (Serf's members). Hidden plumbing that the bash script
//! of `p2pu completions bash` calls (`completions::BASH_DYNAMIC`).
//!
//! What it prints comes from others: a name from any trusted signer (or a legacy payload), a
//! node name that any member with the gossip key chooses. A shell that completes from it must
//! not run it, so only words of [`is_plain_word`] are printed, and the bash snippet matches
//! them without `compgen -W` (which expands `$(...)` in its word list). A user who may not
//! read the state or the Serf secret gets nothing, and no error in the middle of a command
//! line.

use crate::agent::runtime::state::StateStore;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::engines::MemberStatus;
use crate::error::{Error, Result};
use crate::Env;
use std::io::Write;

/// Print the update names or node names the shell completions offer.
#[derive(Debug, clap::Args)]
pub struct Complete {
    /// What to list.
    #[arg(value_enum)]
    what: Words,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Words {
    /// The update names this node has records of.
    Names,
    /// The names of the fleet's members that have not left.
    Nodes,
}

/// The most words printed: a completion is for a person to choose from.
const MAX_WORDS: usize = 1000;

/// A word a shell may take as it is: ASCII letters, digits and `._+-@:,=`, at most 128
/// characters. Everything else (spaces, quotes, `$`, backquotes, globs, control characters)
/// is left out, not escaped.
pub fn is_plain_word(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 128
        && !word.starts_with('-')
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-@:,=".contains(&b))
}

impl Complete {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        // Whatever goes wrong, the shell gets no words: never an error mid-line.
        let words = self.words(env).unwrap_or_default();
        let mut text = String::new();
        for word in words.iter().filter(|w| is_plain_word(w)).take(MAX_WORDS) {
            text.push_str(word);
            text.push('\n');
        }
        env.stdout
            .write_all(text.as_bytes())
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }

    fn words(&self, env: &Env) -> Result<Vec<String>> {
        let config = Config::load(&self.config.resolve(env), None)?;
        Ok(match self.what {
            Words::Names => StateStore::open_read_only(&config.site.agent.state_dir).names()?,
            Words::Nodes => {
                let mut names: Vec<String> = env
                    .engines
                    .gossip(&config)?
                    .members()?
                    .into_iter()
                    .filter(|m| m.status != MemberStatus::Left)
                    .map(|m| m.name)
                    .collect();
                names.sort();
                names.dedup();
                names
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testing::{site_dir, Run};
    use crate::engines::clients::Engines;
    use crate::engines::fake::FakeGossip;

    /// The bash script, in real bash, with a `p2pu` on PATH that prints a hostile word (as
    /// an older or tampered p2pu might): names are offered where a command takes NAME, nodes
    /// after --node, and `$(...)` in a word is never run.
    #[test]
    fn bash_completes_names_and_nodes_without_running_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (code, script, err) = crate::cmd::testing::run(d, &["completions", "bash"]);
        assert_eq!(code, 0, "{err}");
        std::fs::write(d.join("p2pu.bash"), script).unwrap();
        let pwned = d.join("PWNED");
        let fake = format!(
            "#!/bin/sh\ncase \"$2\" in\n  names) printf 'site.pp\\nsite2.pp\\n$(touch {p})\\nsi`touch {p}`\\n' ;;\n  \
             nodes) printf 'cam-1\\ncam-2\\n' ;;\nesac\n",
            p = pwned.display()
        );
        std::fs::create_dir(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/p2pu"), fake).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(d.join("bin/p2pu"), mode).unwrap();
        let complete = |words: &str| {
            let program = format!(
                "source p2pu.bash; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _p2pu_with_names p2pu \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            );
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(program)
                .current_dir(d)
                .env("PATH", format!("{}:/usr/bin:/bin", d.join("bin").display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let names = complete("p2pu mark-bad si");
        assert!(names.lines().any(|l| l == "site.pp"), "{names}");
        assert!(names.lines().any(|l| l == "site2.pp"), "{names}");
        let nodes = complete("p2pu fleet status --node c");
        assert_eq!(nodes, "cam-1\ncam-2\n");
        assert!(!pwned.exists(), "a completed word ran a command");
    }

    #[test]
    fn only_plain_words_are_offered() {
        for ok in ["site.pp", "cam-01", "web.tar.gz", "a:b=c,d@e+f"] {
            assert!(is_plain_word(ok), "{ok}");
        }
        for bad in [
            "",
            "$(touch x)",
            "`id`",
            "a b",
            "a'b",
            "a\"b",
            "*",
            "x;y",
            "-rf",
            "a\nb",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!is_plain_word(bad), "{bad:?}");
        }
    }

    /// Names from the state and members from Serf, a hostile one (a member chooses its own
    /// node name; any trusted signer an update's) left out; no state or no Serf: no words,
    /// exit 0.
    #[test]
    fn names_and_nodes_come_from_the_state_and_serf_without_hostile_words() {
        let dir = site_dir("");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[agent]\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        let complete = |what: &str, engines: Engines| {
            Run::new(dir.path())
                .engines(engines)
                .run(&["complete", what, "--config", "site.toml"])
        };
        assert_eq!(
            complete("names", Engines::fakes()),
            (0, String::new(), String::new())
        );
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        for name in ["site.pp", "$(touch pwned).pp", "motd.txt"] {
            let record = crate::agent::runtime::state::Record::pending(name, "00", b"x");
            store.put(record).unwrap();
        }
        let (code, out, _) = complete("names", Engines::fakes());
        assert_eq!((code, out.as_str()), (0, "motd.txt\nsite.pp\n"));
        let gossip = FakeGossip {
            members: vec![
                FakeGossip::member("cam-1", MemberStatus::Alive),
                FakeGossip::member("$(id)", MemberStatus::Alive),
                FakeGossip::member("gone", MemberStatus::Left),
            ],
            ..FakeGossip::default()
        };
        let engines = Engines::fakes().gossip_engine(std::sync::Arc::new(gossip));
        assert_eq!(
            complete("nodes", engines),
            (0, "cam-1\n".into(), String::new())
        );
        let (code, out, err) = Run::new(dir.path()).run(&["complete", "names", "--config", "nope"]);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    }
}
