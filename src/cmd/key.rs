//! TODO

use crate::cmd::Outcome;
use crate::{Env, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Key {
    /// Not implemented yet.
    Todo,
}

impl Key {
    pub fn run(self, _env: &mut Env) -> Result<Outcome> {
        Ok(Outcome::Success)
    }
}
