//! TODO

use crate::cmd::Outcome;
use crate::{Env, Result};

/// Not implemented yet.
#[derive(Debug, clap::Args)]
pub struct Keygen {}

impl Keygen {
    pub fn run(self, _env: &mut Env) -> Result<Outcome> {
        Ok(Outcome::Success)
    }
}
