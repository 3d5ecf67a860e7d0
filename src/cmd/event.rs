//! `p2pu event`: drives the running NAT client over its control socket: start and end
//! sessions, send an update to the session peers, show the client's view of its NAT.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::{Error, Result};
use crate::nat::control::{self, ClientStatus, Request, Response};
use crate::publish::prepare_checked;
use crate::Env;
use std::io::Write;
use std::path::PathBuf;

/// Drive the running NAT client (sessions, updates, status).
#[derive(Debug, clap::Args)]
// The shared `--config`, with what this command reads from it.
// Global, so `p2pu event status --config FILE` works as `--config` does on other commands
// (issue 29: only `p2pu event --config FILE status` did).
#[command(mut_arg("config", |a| a.help("The site config (for `nat.control_socket`)").global(true)))]
pub struct Event {
    #[command(flatten)]
    config: ConfigArg,
    /// The client's control socket; default: `nat.control_socket` from the config.
    #[arg(long, env = "P2PU_CONTROL_SOCKET", global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Start a session with NODE: hole punching through the proxy, its relay as a fallback.
    Talkto {
        /// The node name of the peer.
        node: String,
    },
    /// Submit PATH as an update over the overlay: torrent, seed, signed announcement to the
    /// session peers.
    Sendfile {
        /// The update: a .pp manifest, a .tar.gz module or a .zip.
        path: PathBuf,
    },
    /// Send a ready signed announcement (`p2pu1:...`, from FILE or `-` for stdin) to the
    /// session peers.
    Announce {
        /// File holding the wire text; `-` reads standard input.
        file: PathBuf,
    },
    /// End the session with NODE, or with every session peer.
    Endsession {
        /// The peer; default: all of them.
        node: Option<String>,
    },
    /// Tell session peers and the proxy goodbye and stop the client.
    Exit,
    /// Mapped address, NAT behaviour seen, session peers and whether each is direct or
    /// relayed.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl Event {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let socket = match self.socket {
            Some(path) => env.resolve(&path),
            None => {
                Config::load(&self.config.resolve(env), None)?
                    .site
                    .nat
                    .control_socket
            }
        };
        let (request, json) = match self.action {
            Action::Talkto { node } => (Request::TalkTo { node }, false),
            Action::Sendfile { path } => {
                let source = env.resolve(&path);
                crate::publish::check_source(&source)?;
                let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
                // What every peer would fail on is refused before anything is seeded or sent,
                // as `submit` refuses it.
                let kind = crate::agent::apply::kind::detect(&source)?;
                let engines = env.engines.clone();
                let seq = env.unix_now_ms();
                let submitted = prepare_checked(
                    &config,
                    &source,
                    Some(kind),
                    None,
                    seq,
                    seq / 1000,
                    || engines.torrent(&config),
                    false,
                    &crate::formats::plan::Plan::default(),
                    // Over the NAT overlay: the chain's transfer, whatever the mode.
                    None,
                    || crate::publish::check_kind(&source, kind, || engines.applier(&config)),
                )?;
                writeln!(env.stdout, "{submitted}")
                    .map_err(Error::io("writing to", "standard output"))?;
                let wire = submitted.wire;
                (Request::Announce { wire }, false)
            }
            Action::Announce { file } => {
                let text = if file.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut env.stdin, &mut text)
                        .map_err(Error::io("reading", "standard input"))?;
                    text
                } else {
                    let path = env.resolve(&file);
                    std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?
                };
                (
                    Request::Announce {
                        wire: text.trim().to_owned(),
                    },
                    false,
                )
            }
            Action::Endsession { node } => (Request::EndSession { node }, false),
            Action::Exit => (Request::Exit, false),
            Action::Status { json } => (Request::Status, json),
        };
        let answer = control::request(&socket, &request)?;
        let text = render(&answer, json)?;
        env.stdout
            .write_all(text.as_bytes())
            .map_err(Error::io("writing to", "standard output"))?;
        if answer.ok {
            Ok(Outcome::Success)
        } else {
            Err(Error::Usage(
                answer.error.unwrap_or_else(|| "the client refused".into()),
            ))
        }
    }
}

fn render(answer: &Response, json: bool) -> Result<String> {
    if let (true, Some(status)) = (json, &answer.status) {
        return crate::cmd::json::render("event status", status);
    }
    if let Some(status) = &answer.status {
        return Ok(status_text(status));
    }
    Ok(match (&answer.message, answer.ok) {
        (Some(message), true) => format!("{message}\n"),
        _ => String::new(),
    })
}

fn status_text(s: &ClientStatus) -> String {
    let show = |a: Option<std::net::SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
    let mut out = format!(
        "node        {}\nlocal       {}\nmapped      {} (STUN {})\nproxy       {} ({}, sees {})\nnat         {}\n",
        s.node,
        s.local,
        show(s.mapped),
        s.stun_server,
        s.proxy,
        if s.registered { "registered" } else { "not registered" },
        show(s.proxy_sees),
        s.nat
    );
    if s.peers.is_empty() {
        out.push_str("no session peers\n");
    } else {
        out.push_str(&format!(
            "{:<24} {:<9} {:<22} {:<16} {}\n",
            "PEER", "PATH", "ADDRESS", "TUNNEL END", "HEARD"
        ));
        for p in &s.peers {
            out.push_str(&format!(
                "{:<24} {:<9} {:<22} {:<16} {} s ago\n",
                p.node,
                p.path,
                show(p.addr),
                show(p.tunnel),
                p.last_heard_secs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::control::PeerStatus;

    #[test]
    fn status_json_round_trips_with_deny_unknown_fields() {
        let status = ClientStatus {
            node: "a".into(),
            proxy: "100.64.0.1:3478".parse().unwrap(),
            stun_server: "100.64.0.1:3478".parse().unwrap(),
            local: "192.168.1.10:3478".parse().unwrap(),
            mapped: Some("100.64.0.2:3478".parse().unwrap()),
            proxy_sees: Some("100.64.0.2:3478".parse().unwrap()),
            registered: true,
            nat: "endpoint-independent".into(),
            peers: vec![PeerStatus {
                node: "b".into(),
                path: "direct".into(),
                addr: Some("100.64.0.3:3478".parse().unwrap()),
                last_heard_secs: 1,
                tunnel: Some("127.0.0.1:40000".parse().unwrap()),
                seed: Some("127.0.0.1:40001".parse().unwrap()),
            }],
        };
        let answer = Response {
            status: Some(status.clone()),
            ..Response::ok("status")
        };
        let text = render(&answer, true).unwrap();
        let back: ClientStatus = crate::cmd::json::decode(text.as_bytes()).unwrap();
        assert_eq!(back, status);
        let text = render(&answer, false).unwrap();
        assert!(text.contains("b                        direct"), "{text}");
    }

    #[test]
    fn no_client_running_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let args = ["event", "--socket", socket.to_str().unwrap(), "status"];
        let (code, _, stderr) = crate::cmd::testing::run(dir.path(), &args);
        assert_eq!(code, 1);
        assert!(
            stderr.starts_with("error: no p2pu nat-client is running: nothing listens on"),
            "{stderr}"
        );
    }

    #[test]
    fn sendfile_seeds_in_the_torrent_engine_before_it_asks_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = crate::cmd::testing::run(dir.path(), &["keygen", "--out", "k"]);
        assert_eq!(code, 0, "{err}");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "[transmission]\ndownload_dir = \"{d}/downloads\"\nuser = \"root\"\n\
                 [agent]\nsigning_key = \"{d}/k/signing.key\"\nfleet_id = \"0123456789abcdef\"\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("site.pp"), "notice('hi')\n").unwrap();
        let torrent = std::sync::Arc::new(crate::engines::fake::FakeTorrent::default());
        let engines = crate::engines::clients::Engines::fakes()
            .torrent_engine(torrent.clone())
            .applier_engine(std::sync::Arc::new(
                crate::engines::fake::FakeApplier::default(),
            ));
        let args = [
            "event",
            "--config",
            "site.toml",
            "--socket",
            "control.sock",
            "sendfile",
            "site.pp",
        ];
        let (code, out, err) = crate::cmd::testing::Run::new(dir.path())
            .engines(engines)
            .run(&args);
        assert_eq!(code, 1);
        assert!(out.starts_with("submitted site.pp seq "), "{out}");
        assert_eq!(torrent.added().len(), 1);
        assert!(
            err.starts_with("error: no p2pu nat-client is running"),
            "{err}"
        );
    }
    /// What every peer would fail on is refused as `submit` refuses it: nothing is seeded and
    /// the client is never asked.
    #[test]
    fn sendfile_refuses_a_manifest_puppet_rejects_and_a_missing_path_before_any_engine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.toml"), "").unwrap();
        std::fs::write(dir.path().join("site.pp"), "file { '/x':\n").unwrap();
        let torrent = std::sync::Arc::new(crate::engines::fake::FakeTorrent::default());
        let applier = crate::engines::fake::FakeApplier {
            fail_with: Some("Error: Could not parse for environment production: Syntax error at end of input (site.pp:2)".into()),
            ..crate::engines::fake::FakeApplier::default()
        };
        let engines = crate::engines::clients::Engines::fakes()
            .torrent_engine(torrent.clone())
            .applier_engine(std::sync::Arc::new(applier));
        let run = |path: &str| {
            let args = [
                "event",
                "--config",
                "site.toml",
                "--socket",
                "control.sock",
                "sendfile",
                path,
            ];
            crate::cmd::testing::Run::new(dir.path())
                .engines(engines.clone())
                .run(&args)
        };
        let (code, out, err) = run("site.pp");
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(err.contains("`puppet parser validate` rejects it"), "{err}");
        let (code, _, err) = run("nope.pp");
        assert_eq!(code, 1);
        assert!(err.contains("nope.pp: no such file or directory"), "{err}");
        assert!(torrent.added().is_empty());
    }
}

#[cfg(test)]
mod config_tests {
    use crate::cmd::testing::{run, site_dir};

    /// Issue 29: `--config` after the action, as on every other command; the socket the
    /// config names is the one tried (none listens here: the error names it).
    #[test]
    fn event_status_takes_config_after_the_action() {
        let dir = site_dir("[nat]\ncontrol_socket = \"/nonexistent/p2pu-test.sock\"\n");
        for args in [
            &["event", "status", "--config", "site.toml", "--json"][..],
            &["event", "--config", "site.toml", "status"][..],
        ] {
            let (code, out, err) = run(dir.path(), args);
            assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
            assert!(
                err.contains("/nonexistent/p2pu-test.sock"),
                "{args:?}: {err}"
            );
        }
    }
}
