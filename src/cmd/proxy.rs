//! `p2pu proxy`: runs the NAT rendezvous (STUN, registry, hole-punching coordination, relay)
//! on `nat.port` until SIGTERM or SIGINT.

use crate::cmd::{ConfigArg, Outcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::nat::{self, names, proxy::ProxyConfig};
use crate::Env;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// Run the NAT rendezvous proxy (foreground; logs to stderr).
#[derive(Debug, clap::Args)]
pub struct Proxy {
    #[command(flatten)]
    config: ConfigArg,
    /// Log filter (tracing's env-filter syntax), e.g. `debug` or `p2pu=debug`.
    #[arg(long, env = "P2PU_LOG", default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
    /// Listen on this address instead of every address on `nat.port`.
    #[arg(long, env = "P2PU_PROXY_LISTEN")]
    listen: Option<SocketAddr>,
}

impl Proxy {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&self.config.resolve(env), None)?;
        let secret = nat::fleet_secret(&config)?;
        let names_file = config.site.nat.proxy_state_dir.join(names::BINDINGS_FILE);
        crate::daemon::init_logging(&self.log)?;
        let socket = match self.listen {
            Some(addr) => UdpSocket::bind(addr),
            // IPv4 only: a dual-stack socket would report IPv4 clients as v4-mapped IPv6
            // addresses, and STUN clients would learn those.
            None => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, config.site.nat.port)),
        }
        .map_err(Error::io(
            "binding the proxy's UDP port",
            format!("nat.port {}", config.site.nat.port),
        ))?;
        let stop = crate::daemon::stop_on_signals()?;
        let mut proxy_config = ProxyConfig::new(secret, config.site.nat.relay_rate_kbps);
        let names = names::Bindings::load(&names_file, proxy_config.max_members)
            .map_err(|e| Error::Usage(crate::error::chain(&e)))?;
        tracing::info!(file = %names_file.display(), bound = names.len(), "name bindings");
        let main = socket
            .local_addr()
            .map_err(Error::io("reading the bound address", "the proxy's socket"))?;
        // STUN on the next port too, so members can tell how their NAT maps.
        match main
            .port()
            .checked_add(1)
            .map(|port| UdpSocket::bind((main.ip(), port)))
        {
            Some(Ok(alt)) => {
                proxy_config.alt_port = main.port() + 1;
                let alt_config = proxy_config.clone();
                let alt_stop = stop.clone();
                std::thread::Builder::new()
                    .name("stun-alt".into())
                    .spawn(move || {
                        if let Err(e) = nat::proxy::run_stun_only(&alt, alt_config, &alt_stop) {
                            tracing::error!(error = %e, "the alternate STUN port failed");
                        }
                    })
                    .map_err(Error::io("starting a thread", "stun-alt"))?;
            }
            _ => tracing::warn!(
                port = main.port().saturating_add(1),
                "no alternate STUN port: members will not see their NAT's mapping behaviour"
            ),
        }
        crate::sdnotify::ready();
        nat::proxy::run(&socket, proxy_config, names, &stop).map_err(Error::io(
            "serving UDP",
            format!("nat.port {}", config.site.nat.port),
        ))?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::run;

    // The proxy binds UDP ports and runs until a signal; in-process it is tested up to the
    // fleet secret it reads before binding anything.
    #[test]
    fn a_missing_fleet_secret_is_named_before_anything_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("fleet.secret");
        std::fs::write(
            dir.path().join("site.toml"),
            format!("[nat]\nfleet_secret_file = \"{}\"\n", secret.display()),
        )
        .unwrap();
        let (code, out, err) = run(dir.path(), &["proxy", "--config", "site.toml"]);
        assert_eq!((code, out.as_str()), (1, ""));
        let want = format!("error: reading the fleet secret {}: ", secret.display());
        assert!(err.starts_with(&want), "{err}");
    }
}
