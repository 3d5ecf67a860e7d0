//! TODO

use crate::cmd::Outcome;
use crate::{Env, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Torrent {
    /// Not implemented yet.
    Todo,
}

impl Torrent {
    pub fn run(self, _env: &mut Env) -> Result<Outcome> {
        Ok(Outcome::Success)
    }
}
