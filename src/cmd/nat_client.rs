//! `p2pu nat-client`: runs this node's NAT client (keepalive, hole punching, session peers,
//! announcements into the spool) and its control socket until SIGTERM, SIGINT or
//! `p2pu event exit`.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::{Error, Result};
use crate::nat::{self, client::Client, client::ClientConfig};
use crate::Env;
use std::net::SocketAddr;
use std::time::Duration;

/// Run the NAT client (foreground; logs to stderr).
#[derive(Debug, clap::Args)]
pub struct NatClient {
    #[command(flatten)]
    config: ConfigArg,
    /// Log filter (tracing's env-filter syntax), e.g. `debug` or `p2pu=debug`.
    #[arg(long, env = "P2PU_LOG", default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
}

impl NatClient {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        let site = &config.site.nat;
        let proxy_text = site.proxy.as_deref().ok_or_else(|| {
            Error::Usage("nat.proxy is not set: the client needs the rendezvous".into())
        })?;
        let proxy = nat::resolve("nat.proxy", proxy_text)?;
        let stun_server = match &site.stun_server {
            Some(text) => nat::resolve("nat.stun_server", text)?,
            None => proxy,
        };
        let name = config
            .node_name
            .clone()
            .ok_or_else(|| Error::Internal("node name unresolved with machine facts".into()))?;
        // Its own part of the spool: it runs as `p2pu`, the spool proper admits root only.
        let spool_dir = crate::agent::runtime::spool::overlay_dir(&config.site.agent.spool_dir);
        std::fs::create_dir_all(&spool_dir).map_err(Error::io("creating the spool", &spool_dir))?;
        let bind: SocketAddr = if proxy.is_ipv4() {
            ([0, 0, 0, 0], site.port).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, site.port).into()
        };
        let client_config = ClientConfig {
            name,
            bind,
            proxy,
            stun_server,
            secret: nat::fleet_secret(&config)?,
            identity: crate::keys::read_secret(&site.identity_key_file)?,
            keepalive: Duration::from_secs(u64::from(site.keepalive_secs)),
            peer_expiry: Duration::from_secs(u64::from(site.peer_expiry_secs)),
            spool_dir,
        };
        crate::daemon::init_logging(&self.log)?;
        let client = Client::bind(
            client_config,
            Some(config.site.transmission.peer_port),
            Some(config.site.agent.seed_port),
        )
        .map_err(Error::io(
            "binding the client's UDP port",
            format!("nat.port {}", site.port),
        ))?;
        let (sink, requests) = std::sync::mpsc::channel();
        let server = nat::control::serve(&site.control_socket, sink)?;
        let stop = crate::daemon::stop_on_signals()?;
        crate::sdnotify::ready();
        let result = client.run(&requests, &stop);
        let _ = std::fs::remove_file(&site.control_socket);
        server.drain(Duration::from_secs(2));
        result.map_err(Error::io("serving UDP", format!("nat.port {}", site.port)))?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::{run, site_dir};

    // The client binds a UDP port and runs until a signal; in-process it is tested up to the
    // config checks that come before any of that.
    #[test]
    fn a_config_without_a_proxy_is_refused_before_anything_is_bound() {
        let dir = site_dir("");
        let (code, out, err) = run(dir.path(), &["nat-client", "--config", "site.toml"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "error: nat.proxy is not set: the client needs the rendezvous\n"
        );
    }

    #[test]
    fn a_missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = run(dir.path(), &["nat-client", "--config", "nothing.toml"]);
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!("{}", dir.path().join("nothing.toml").display())),
            "{err}"
        );
    }
}
