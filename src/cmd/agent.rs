//! `p2pu agent`: the node's long-running service (systemd unit `p2pu-agent.service`).

use crate::agent::runtime::run::Agent;
use crate::agent::runtime::state::StateStore;
use crate::cmd::{ConfigArg, Outcome};
use crate::config::{Config, MachineFacts};
use crate::error::Result;
use crate::Env;

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
        env.engines.check_agent_engines(&config)?;
        let stop = crate::daemon::stop_on_signals()?;
        let agent = Agent {
            node_name: config.node_name.clone().unwrap_or_default(),
            store: StateStore::open(&config.site.agent.state_dir)?,
            engine: env.engines.torrent(&config)?,
            gossip: env.engines.gossip(&config)?,
            puppet: env.engines.applier(&config)?,
            // Without its fleet the agent could only refuse every v2 announcement.
            fleet: config.fleet_id()?,
            config,
            stop,
            log_filter: self.log,
        };
        agent.run()?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::run;

    // The agent proper needs root, Serf, Transmission and a serving child process; in-process
    // it is tested up to its first check, which comes before anything is set up.
    #[test]
    fn a_bad_log_filter_is_refused_before_the_config_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let args = ["agent", "--config", "nothing.toml", "--log", "p2pu=loud"];
        let (code, out, err) = run(dir.path(), &args);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(err.starts_with("error: log filter `p2pu=loud`"), "{err}");
    }
}
