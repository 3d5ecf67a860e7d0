//! `p2pu agent-serve` (hidden): the node's tracker and web seed server, started by `p2pu agent`
//! as an unprivileged child. See `agent::serve` for the protocol on its stdin and stdout.

use crate::agent::transfer::serve::{ServeOptions, Serving};
use crate::cmd::Outcome;
use crate::error::{Error, Result};
use crate::Env;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Serve the node's BitTorrent tracker and web seeds for `p2pu agent` (internal).
///
/// `p2pu agent` starts this itself, as `agent.serve_user` when it runs as root, with no way to
/// regain privileges. Once both servers listen it prints one JSON line with the bound
/// addresses on stdout (`{"tracker":"127.0.0.1:6969","seed":"10.0.0.5:6880"}`), then reads
/// membership snapshots on stdin, one JSON line each, and exits when stdin closes. SIGTERM and
/// SIGINT are ignored: the agent decides when it stops.
#[derive(Debug, clap::Args)]
pub struct AgentServe {
    /// Address of the tracker (the agent passes 127.0.0.1:<agent.tracker_port>); port 0 picks
    /// a free one.
    #[arg(long)]
    tracker: SocketAddr,
    /// Address of the web seed server (the advertise address and agent.seed_port); port 0
    /// picks a free one.
    #[arg(long)]
    seed: SocketAddr,
    /// The download dir whose complete payloads are served (transmission.download_dir).
    #[arg(long)]
    root: PathBuf,
    /// The children a member feeds a stripe (transfer.fan_out): sizes the web seed server's
    /// workers and stripe readers (clamped to 2..=32).
    #[arg(long, default_value_t = 8)]
    fan_out: usize,
    /// Log filter (tracing's env-filter syntax), e.g. `debug`.
    #[arg(long, default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
    /// Standard error is the journal's stream (the agent knows; this process cannot see it):
    /// log with syslog priorities and no time or level of its own.
    #[arg(long, hide = true)]
    journal: bool,
}

impl AgentServe {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        crate::daemon::init_logging_to(
            &self.log,
            self.journal || crate::daemon::logs_to_journal(),
        )?;
        confine_process()?;
        let options = ServeOptions {
            tracker: self.tracker,
            seed: self.seed,
            root: env.resolve(&self.root),
            fan_out: self.fan_out,
        };
        let serving = Serving::start(&options)?;
        let ready = serde_json::to_string(&serving.ready())
            .map_err(|e| Error::Internal(format!("encoding the ready line: {e}")))?;
        writeln!(env.stdout, "{ready}")
            .and_then(|()| env.stdout.flush())
            .map_err(Error::io("writing the ready line to", "standard output"))?;
        tracing::info!(
            tracker = %serving.ready().tracker_url(),
            seeds = %serving.ready().seed_url(),
            uid = nix::unistd::getuid().as_raw(),
            "serving"
        );
        serving.run(std::io::BufReader::new(&mut env.stdin), std::io::stdout())?;
        Ok(Outcome::Success)
    }
}

/// Process-wide settings of the serving process: it stops only when the agent closes its stdin
/// (a terminal's Ctrl-C or systemd's SIGTERM to the whole unit reach the agent too, which then
/// closes it), and it can gain no privileges even when started by hand.
fn confine_process() -> Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }
            .map_err(|e| Error::io("ignoring signal", sig.as_str())(e.into()))?;
    }
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| Error::io("setting no_new_privs for", "this process")(e.into()))?;
    // Started through /proc/self/exe the process would be called `exe` in ps and ss.
    let _ = nix::sys::prctl::set_name(c"p2pu-serve");
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::agent::runtime::supervise::{command, ServeSpec};
    use crate::agent::transfer::serve::ServeOptions;
    use std::net::Ipv4Addr;

    #[test]
    fn the_child_command_is_this_binary_with_arguments_agent_serve_accepts() {
        let spec = ServeSpec {
            options: ServeOptions {
                tracker: (Ipv4Addr::LOCALHOST, 6969).into(),
                seed: (Ipv4Addr::new(10, 0, 0, 1), 6880).into(),
                root: "/srv/downloads".into(),
                fan_out: 16,
            },
            user: "p2pu".into(),
            log_filter: "info".into(),
            spool: None,
        };
        let command = command(&spec, None);
        assert_eq!(command.get_program(), "/proc/self/exe");
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "agent-serve",
                "--tracker",
                "127.0.0.1:6969",
                "--seed",
                "10.0.0.1:6880",
                "--root",
                "/srv/downloads",
                "--fan-out",
                "16",
                "--log",
                "info"
            ]
        );
        assert_eq!(command.get_current_dir(), Some(std::path::Path::new("/")));
        // The hidden subcommand takes exactly these.
        let argv = std::iter::once("p2pu".into()).chain(args.iter().map(|a| a.to_string()));
        if let Err(e) = <crate::cmd::Cli as clap::Parser>::try_parse_from(argv) {
            panic!("{e}");
        }
    }

    // Past its log filter the process ignores SIGTERM and drops privileges for good, which a
    // test process must not; the serving itself is tested in agent::transfer::serve.
    #[test]
    fn a_bad_log_filter_is_refused_before_the_process_is_confined() {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "agent-serve",
            "--tracker",
            "127.0.0.1:0",
            "--seed",
            "127.0.0.1:0",
            "--root",
            ".",
            "--log",
            "p2pu=loud",
        ];
        let (code, out, err) = crate::cmd::testing::run(dir.path(), &args);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(err.starts_with("error: log filter `p2pu=loud`"), "{err}");
    }
}
