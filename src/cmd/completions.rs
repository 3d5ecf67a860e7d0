//! `p2pu completions <shell>` and `p2pu man`: generate shell completions and the man page from
//! the clap definition, so the Debian package ships files that always match the binary.
//! Both are hidden: packagers and install/build-deb.sh call them, operators never need to.

use crate::cmd::{Cli, Outcome};
use crate::error::Error;
use crate::{Env, Result};
use clap::CommandFactory;
use std::io::Write;

/// Print the completion script for SHELL on stdout.
#[derive(Debug, clap::Args)]
pub struct Completions {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let mut command = Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut command, "p2pu", &mut out);
        env.stdout
            .write_all(&out)
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

/// Print the p2pu(1) man page (roff) on stdout.
#[derive(Debug, clap::Args)]
pub struct Man {}

impl Man {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .map_err(Error::io("rendering the man page to", "memory"))?;
        env.stdout
            .write_all(&out)
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use crate::env::Env;

    fn run(args: &[&str]) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let (mut env, out, err) = Env::capture(dir.path(), b"");
        let args = std::iter::once("p2pu").chain(args.iter().copied());
        let code = crate::cmd::main(args.map(Into::into), &mut env);
        assert_eq!(code, 0, "{}", err.text());
        (code, out.text())
    }

    #[test]
    fn bash_completion_knows_the_commands() {
        let (_, out) = run(&["completions", "bash"]);
        assert!(out.contains("_p2pu()"), "{out}");
        assert!(out.contains("init"), "{out}");
    }

    #[test]
    fn man_page_is_roff_for_p2pu() {
        let (_, out) = run(&["man"]);
        assert!(out.starts_with(".ie"), "{}", &out[..out.len().min(200)]);
        assert!(out.contains(".TH p2pu 1"), "{out}");
    }
}
