//! `p2pu agent`: the node's long-running service (systemd unit `p2pu-agent.service`).

use crate::agent::runtime::run::Agent;
use crate::agent::runtime::state::StateStore;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::Result;
use crate::Env;
use std::sync::Arc;

/// Verify, download and apply signed updates as they arrive in the spool.
///
/// Logs one line per decision to stderr (journald keeps them). SIGTERM or SIGINT stop it
/// cleanly; a second signal exits at once.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    #[command(flatten)]
    config: ConfigArg,
    /// Log filter (tracing's env-filter syntax), e.g. `debug` or `p2pu=debug`.
    #[arg(long, env = "P2PU_LOG", default_value = crate::daemon::DEFAULT_LOG)]
    log: String,
}

impl AgentCommand {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        crate::daemon::init_logging(&self.log)?;
        let config = Config::load(&self.config.resolve(env), Some(&MachineFacts::probe()))?;
        crate::engines::clients::check_agent_engines(&config)?;
        let stop = crate::daemon::stop_on_signals()?;
        let agent = Agent {
            node_name: config.node_name.clone().unwrap_or_default(),
            store: StateStore::open(&config.site.agent.state_dir)?,
            engine: Arc::new(crate::engines::clients::transmission(&config)?),
            gossip: Arc::new(crate::engines::clients::serf(&config)?),
            puppet: Box::new(crate::engines::clients::puppet(&config)),
            config,
            stop,
            log_filter: self.log,
        };
        agent.run()?;
        Ok(Outcome::Success)
    }
}
