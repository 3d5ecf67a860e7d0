//! `p2pu proxy`: runs the NAT rendezvous (STUN, registry, hole-punching coordination, relay)
//! on `nat.port` until SIGTERM or SIGINT.

use crate::cmd::Outcome;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::nat::{self, proxy::ProxyConfig};
use crate::Env;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;

/// Run the NAT rendezvous proxy (foreground; logs to stderr).
#[derive(Debug, clap::Args)]
pub struct Proxy {
    /// The site config.
    #[arg(long, env = "P2PU_CONFIG", default_value = "/etc/p2pu/site.toml")]
    config: PathBuf,
    /// Listen on this address instead of every address on `nat.port`.
    #[arg(long, env = "P2PU_PROXY_LISTEN")]
    listen: Option<SocketAddr>,
}

impl Proxy {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let config = Config::load(&env.resolve(&self.config), None)?;
        let secret = nat::fleet_secret(&config)?;
        nat::init_logging();
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
        let stop = nat::stop_on_signals()?;
        let mut proxy_config = ProxyConfig::new(secret, config.site.nat.relay_rate_kbps);
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
                std::thread::Builder::new()
                    .name("stun-alt".into())
                    .spawn(move || {
                        if let Err(e) = nat::proxy::run_stun_only(&alt, alt_config, stop) {
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
        nat::proxy::run(&socket, proxy_config, stop).map_err(Error::io(
            "serving UDP",
            format!("nat.port {}", config.site.nat.port),
        ))?;
        Ok(Outcome::Success)
    }
}
