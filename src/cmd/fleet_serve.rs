//! `p2pu fleet serve`: runs the fleet dashboard (`crate::dashboard`) on this node or the
//! operator's machine until SIGTERM/SIGINT. Decides who may open it: loopback needs no token,
//! any other address needs one (from `--token-file`, or made here and printed once), and
//! `--allow-actions` always needs one and this node's signing key.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::dashboard::{self, Dashboard, Options};
use crate::error::{Error, Result};
use crate::Env;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Serve a live web page of the fleet: the node x update matrix, the newest rollout, the
/// transfer, one node's history and logs.
///
/// Read-only unless --allow-actions. Listens on loopback unless told otherwise; any other
/// address requires a token (printed once, or read from --token-file).
#[derive(Debug, clap::Args)]
pub struct FleetServe {
    #[command(flatten)]
    config: ConfigArg,
    /// Address and port to listen on.
    #[arg(long, env = "P2PU_DASHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Read the token from this file instead of making one (at least 16 characters).
    #[arg(long, env = "P2PU_DASHBOARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Show abort, resume and retry buttons that send signed control statements with this
    /// node's signing key, like `p2pu rollout` (each asks for confirmation). Needs a token
    /// even on loopback: another local user must not sign with the operator's key.
    #[arg(long)]
    allow_actions: bool,
    /// Seconds between asking the fleet.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// How long each query waits for answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Log filter (tracing env-filter syntax; also P2PU_LOG).
    #[arg(long, env = "P2PU_LOG", default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
}

/// Where the dashboard's token comes from, decided before anything is bound.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// Loopback, read-only: none.
    None,
    /// Read from `--token-file`.
    File(String),
    /// Made now: printed once in the URL.
    Made(String),
}

impl TokenSource {
    pub fn token(&self) -> Option<&str> {
        match self {
            TokenSource::None => None,
            TokenSource::File(t) | TokenSource::Made(t) => Some(t),
        }
    }
}

/// The token this listen address and these flags require.
pub fn token_source(
    listen: SocketAddr,
    token_file: Option<&std::path::Path>,
    allow_actions: bool,
) -> Result<TokenSource> {
    if let Some(path) = token_file {
        return Ok(TokenSource::File(dashboard::read_token(path)?));
    }
    if allow_actions || !listen.ip().is_loopback() {
        return Ok(TokenSource::Made(dashboard::new_token()));
    }
    Ok(TokenSource::None)
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() || flag == "--timeout")
        .ok_or_else(|| Error::Usage(format!("{flag} {value}: not a duration in seconds")))
}

impl FleetServe {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let interval = seconds("--interval", self.interval)?;
        let timeout = seconds("--timeout", self.timeout)?;
        crate::daemon::init_logging(&self.log)?;
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        let gossip = env.engines.gossip(&config)?;
        let token = token_source(self.listen, self.token_file.as_deref(), self.allow_actions)?;
        let actions: Option<Arc<dashboard::ActionFn>> = if self.allow_actions {
            // Refused now, not at the first click: without the key no action could be signed.
            crate::keys::read_secret(&config.site.agent.signing_key)?;
            config.fleet_id()?;
            let (config, gossip) = (config.clone(), gossip.clone());
            Some(Arc::new(move |action, name: &str, seq| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let control = crate::publish::send_control(
                    &config,
                    gossip.as_ref(),
                    action,
                    name,
                    seq,
                    now,
                    Vec::new(),
                )?;
                Ok(format!(
                    "sent {} of {} seq {} to every node",
                    control.action.as_str(),
                    name,
                    seq
                ))
            }))
        } else {
            None
        };
        let stop = crate::daemon::stop_on_signals()?;
        let server = Dashboard::start(
            gossip,
            Options {
                listen: self.listen,
                token: token.token().map(str::to_string),
                interval,
                timeout,
                actions,
            },
        )?;
        let addr = server.addr();
        let mut said = String::new();
        if !addr.ip().is_loopback() {
            said.push_str(&format!(
                "p2pu: listening on {addr}, beyond loopback: every request needs the token\n"
            ));
        }
        if self.allow_actions {
            said.push_str(
                "p2pu: --allow-actions: abort, resume and retry are signed with this node's key\n",
            );
        }
        let url = match &token {
            TokenSource::Made(t) => format!(
                "http://{addr}/?token={t}\n(the token is shown only this once; give --token-file to choose one)\n"
            ),
            TokenSource::File(_) => format!("http://{addr}/?token=<the token in the token file>\n"),
            TokenSource::None => format!("http://{addr}/\n"),
        };
        env.stderr
            .write_all(said.as_bytes())
            .map_err(Error::io("writing to", "standard error"))?;
        env.stdout
            .write_all(url.as_bytes())
            .and_then(|()| env.stdout.flush())
            .map_err(Error::io("writing to", "standard output"))?;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(server);
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback alone needs no token; any other address, or actions, get one made here; a
    /// token file is read and a short one refused.
    #[test]
    fn beyond_loopback_or_with_actions_a_token_is_required() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lan: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(token_source(lo, None, false).unwrap(), TokenSource::None);
        for (addr, actions) in [(lan, false), (lo, true), (lan, true)] {
            let TokenSource::Made(token) = token_source(addr, None, actions).unwrap() else {
                panic!("{addr} {actions}: no token made");
            };
            assert!(token.len() >= dashboard::MIN_TOKEN, "{token}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "short\n").unwrap();
        let err = token_source(lan, Some(&file), false).unwrap_err();
        assert!(crate::error::chain(&err).contains("at least 16"), "{err}");
        std::fs::write(&file, "0123456789abcdefXYZ\n").unwrap();
        assert_eq!(
            token_source(lan, Some(&file), false).unwrap(),
            TokenSource::File("0123456789abcdefXYZ".into())
        );
    }
}
