//! TODO

use crate::cmd::Outcome;
use crate::{Env, Result};

/// Not implemented yet.
#[derive(Debug, clap::Args)]
pub struct Init {}

impl Init {
    pub fn run(self, _env: &mut Env) -> Result<Outcome> {
        Ok(Outcome::Success)
    }
}
