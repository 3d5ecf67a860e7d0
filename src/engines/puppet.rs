//! Runs `puppet apply` and `puppet module install` (Puppet 7) and turns their exit codes into
//! typed results. With `vardir_root` set, every directory Puppet would write outside the
//! manifest's own resources is redirected under that root, so tests and side-by-side runs never
//! touch /var, /run or /etc.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{one_line, Invocation, RunFailure};

/// What p2pu asks of a configuration applier.
pub trait Applier: Send + Sync {
    /// Applies a manifest. Resource failures and compile errors are errors.
    fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError>;
    /// Installs a module from a local `.tar.gz` into `target_dir`, replacing any installed
    /// version, without looking at dependencies (there is no Forge offline).
    fn module_install(
        &self,
        tarball: &Path,
        target_dir: &Path,
    ) -> Result<ModuleInstalled, PuppetError>;
    /// Parses a manifest without compiling or applying it (`puppet parser validate`): what
    /// `submit` asks before anything is broadcast. An applier that cannot check refuses, so a
    /// check is never skipped silently.
    fn validate(&self, manifest: &Path) -> Result<(), PuppetError> {
        Err(PuppetError::Unsupported {
            what: "validating",
            manifest: manifest.to_path_buf(),
        })
    }
    /// Compiles the manifest and reports what applying it would change, changing nothing
    /// (`puppet apply --noop`).
    fn noop(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        Err(PuppetError::Unsupported {
            what: "a dry run of",
            manifest: manifest.to_path_buf(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Exit 2: some resources changed.
    Changed,
    /// Exit 0: everything was already in the wanted state.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub status: ApplyStatus,
    pub exit_code: i32,
    /// stdout and stderr, interleaved as Puppet wrote them.
    pub output: String,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInstalled {
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PuppetError {
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// `puppet parser validate` refused the manifest: nothing was compiled or applied.
    #[error("puppet parser validate refuses {}: {}", manifest.display(), digest(output))]
    Invalid {
        command: String,
        manifest: PathBuf,
        output: String,
    },
    #[error("this applier cannot do {what} {}", manifest.display())]
    Unsupported {
        what: &'static str,
        manifest: PathBuf,
    },
    /// Exit 1: nothing was applied (syntax error, missing file, unknown class...).
    #[error("puppet could not compile {}: `{command}` exit status: 1: {}", manifest.display(), digest(output))]
    Compile {
        command: String,
        manifest: PathBuf,
        output: String,
    },
    /// Exit 4 (failures only) or 6 (failures and changes).
    #[error("puppet apply of {} had failing resources{}: `{command}` exit status: {exit_code}: {}",
        manifest.display(), if *changed { " (other resources changed)" } else { "" }, digest(output))]
    ResourceFailures {
        command: String,
        manifest: PathBuf,
        exit_code: i32,
        changed: bool,
        output: String,
    },
    /// Any other exit status, or death by a signal.
    #[error("`{command}` {status}: {}", digest(output))]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("`{command}` did not finish within {after:?} and was killed")]
    TimedOut { command: String, after: Duration },
    // Checked first: given a path that does not exist, `puppet module install` takes it for a
    // Forge module name and goes to the network.
    #[error("module archive {} is not a file", path.display())]
    TarballMissing { path: PathBuf },
    #[error("resolving {}", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::LayerError for PuppetError {}

impl PuppetError {
    /// The full output of the failed run, when there is one.
    pub fn output(&self) -> Option<&str> {
        match self {
            PuppetError::Compile { output, .. }
            | PuppetError::Invalid { output, .. }
            | PuppetError::ResourceFailures { output, .. }
            | PuppetError::Failed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// Why Puppet failed, as an operator wants to read it first: its first `Error:` line (see
    /// [`first_error`]), or `None` when Puppet said none (it was killed, or never ran).
    pub fn cause(&self) -> Option<String> {
        self.output().and_then(first_error)
    }
}

/// Puppet's first `Error:` line, trimmed: Facter's noise left out, ` on node <host>` dropped,
/// and Puppet's `(file: /path/x.pp, line: 3, column: 7)` shortened to `(x.pp:3)`. The file is
/// named by its last component: on a node that is the update's name (the verified copy is
/// `<state_dir>/verified/<ih>-<seq>/<name>`), which the operator knows, not the temporary path.
/// Line breaks inside the message are impossible here: it is one line of the output.
pub fn first_error(output: &str) -> Option<String> {
    let line = output
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("Error:") && !line.starts_with("Error: Facter:"))?;
    let mut text = line.to_string();
    if let Some(at) = text.rfind(" on node ") {
        // Only when it ends the line: the host name is one word.
        if !text[at + " on node ".len()..].contains(' ') {
            text.truncate(at);
        }
    }
    let mut location = None;
    if let Some(start) = text.rfind(" (file: ") {
        if let Some(len) = text[start..].find(')') {
            let inside = &text[start + " (file: ".len()..start + len];
            let mut parts = inside.split(", ");
            let file = parts.next().unwrap_or_default();
            let line_no = parts.find_map(|p| p.strip_prefix("line: "));
            let file = Path::new(file)
                .file_name()
                .map_or_else(|| file.to_string(), |f| f.to_string_lossy().into_owned());
            location = Some(match line_no {
                Some(n) => format!("{file}:{n}"),
                None => file,
            });
            text.replace_range(start..start + len + 1, "");
        }
    }
    let text = text.trim_end().to_string();
    Some(match location {
        Some(at) => format!("{text} ({at})"),
        None => text,
    })
}

/// The lines of Puppet's output that explain a failure, on one line: its `Error:` lines
/// (deduplicated), or its last lines when there are none. Facter's own errors are left out when
/// others exist: in containers it reports one per fact it cannot read (`/proc/1/environ`), which
/// says nothing about the manifest.
fn digest(output: &str) -> String {
    let mut errors: Vec<&str> = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.starts_with("Error:")
            && !line.starts_with("Error: Facter:")
            && !errors.contains(&line)
        {
            errors.push(line);
        }
    }
    if errors.is_empty() {
        one_line(output, 5)
    } else {
        one_line(&errors.join("\n"), 8)
    }
}

/// A `puppet` command line.
#[derive(Debug, Clone)]
pub struct Puppet {
    pub binary: PathBuf,
    /// When set, Puppet's var, log, run, ssl, public and device-config dirs go under it.
    pub vardir_root: Option<PathBuf>,
    /// Directories for `--modulepath`; empty means Puppet's default.
    pub modulepath: Vec<PathBuf>,
    /// Further flags for `puppet apply` (e.g. `--noop`, `--tags`).
    pub extra_flags: Vec<String>,
    /// Kill a run that takes longer; `None` waits as long as it takes.
    pub timeout: Option<Duration>,
    /// Where the warm `puppet parser validate` keeps its socket (a directory only this user
    /// may enter; see [`super::warm_validator`]); `None` runs the cold command every time.
    pub warm_dir: Option<PathBuf>,
}

impl Default for Puppet {
    fn default() -> Puppet {
        Puppet {
            binary: PathBuf::from("puppet"),
            vardir_root: None,
            modulepath: Vec::new(),
            extra_flags: Vec::new(),
            timeout: None,
            warm_dir: None,
        }
    }
}

impl Puppet {
    /// `puppet <subcommand> <action...>` with the flags every run shares.
    fn invocation(&self, words: &[&str]) -> Invocation {
        let mut invocation = Invocation::new(&self.binary);
        for word in words {
            invocation = invocation.arg(*word);
        }
        // Escape codes would end up in error messages and logs.
        invocation = invocation.arg("--color=false");
        if let Some(root) = &self.vardir_root {
            // Measured on Debian's Puppet 7.23: `--vardir` alone still writes
            // /var/cache/puppet/public/last_run_summary.yaml and creates /etc/puppet/devices.
            for (flag, sub) in [
                ("--vardir", "var"),
                ("--logdir", "log"),
                ("--rundir", "run"),
                ("--ssldir", "ssl"),
                ("--publicdir", "public"),
                ("--deviceconfdir", "devices"),
            ] {
                invocation = invocation.arg(flag).arg(root.join(sub));
            }
        }
        invocation.merge_stderr = true;
        invocation
    }

    fn apply_invocation(&self, manifest: &Path) -> Invocation {
        let mut invocation = self.invocation(&["apply", "--detailed-exitcodes"]);
        if !self.modulepath.is_empty() {
            let joined = std::env::join_paths(&self.modulepath)
                .unwrap_or_else(|_| lossy_join(&self.modulepath));
            invocation = invocation.arg("--modulepath").arg(joined);
        }
        invocation
            .args
            .extend(self.extra_flags.iter().map(OsString::from));
        invocation.arg(not_a_flag(manifest))
    }

    fn run(&self, invocation: &Invocation) -> Result<super::Finished, PuppetError> {
        invocation
            .run(self.timeout)
            .map_err(|failure| match failure {
                RunFailure::Spawn(source) => PuppetError::Spawn {
                    command: invocation.shown(),
                    source,
                },
                RunFailure::TimedOut(after) => PuppetError::TimedOut {
                    command: invocation.shown(),
                    after,
                },
            })
    }
}

/// For a user whose HOME Puppet cannot write (a system user's `/nonexistent`, say), a
/// temporary HOME for `invocation`, alive as long as the returned guard: Puppet keeps a
/// non-root user's settings under `~/.puppetlabs` and fails with `Permission denied @
/// dir_s_mkdir - /nonexistent`, which `submit` showed as the manifest's fault (issue 29).
fn scratch_home(invocation: &mut Invocation) -> Option<tempfile::TempDir> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let usable = std::env::var_os("HOME").is_some_and(|home| {
        let home = Path::new(&home);
        home.is_dir() && nix::unistd::access(home, nix::unistd::AccessFlags::W_OK).is_ok()
    });
    if usable {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("p2pu-puppet-home-")
        .tempdir()
        .ok()?;
    invocation
        .env
        .push(("HOME".into(), dir.path().as_os_str().to_owned()));
    Some(dir)
}

/// A path that cannot be mistaken for an option.
fn not_a_flag(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new(".").join(path)
    }
}

/// `join_paths` refuses a path containing `:`; Puppet would split it anyway, so say what was
/// asked and let Puppet report the directory it cannot find.
fn lossy_join(paths: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(path);
    }
    joined
}

impl Puppet {
    /// Fails when `puppet` cannot be found where it would be run from.
    pub fn check_installed(&self) -> Result<PathBuf, super::NotInstalled> {
        super::NotInstalled::check(
            &self.binary,
            "the agent applies manifest and module updates with it",
            "puppet",
        )
    }
}

impl Puppet {
    /// The warm validator's verdict on `manifest`, when there is one to ask (see
    /// [`super::warm_validator`]); `None` runs the cold command.
    fn validate_warm(&self, manifest: &Path) -> Option<super::warm_validator::Verdict> {
        let dir = self.warm_dir.as_ref()?;
        let binary = self.check_installed().ok()?;
        let flags = self.invocation(&[]).args;
        let warm = super::warm_validator::WarmValidator::new(&binary, dir, flags)?;
        let manifest = std::path::absolute(manifest).ok()?;
        warm.validate(&manifest, self.timeout)
    }

    fn validate_invocation(&self, manifest: &Path) -> Invocation {
        self.invocation(&["parser", "validate"])
            .arg(not_a_flag(manifest))
    }

    fn noop_invocation(&self, manifest: &Path) -> Invocation {
        let mut invocation = self.apply_invocation(manifest);
        // Before the manifest, which stays the last word.
        let at = invocation.args.len().saturating_sub(1);
        invocation.args.insert(at, "--noop".into());
        invocation
    }

    /// Runs `invocation`, a `puppet apply` of `manifest`, and reads its detailed exit code.
    fn run_apply(
        &self,
        invocation: &Invocation,
        manifest: &Path,
    ) -> Result<ApplyReport, PuppetError> {
        let finished = self.run(invocation)?;
        let output = String::from_utf8_lossy(&finished.stdout).into_owned();
        let command = invocation.shown();
        let manifest = manifest.to_path_buf();
        match finished.status.code() {
            Some(0) => Ok(ApplyReport {
                status: ApplyStatus::Unchanged,
                exit_code: 0,
                output,
                elapsed: finished.elapsed,
            }),
            Some(2) => Ok(ApplyReport {
                status: ApplyStatus::Changed,
                exit_code: 2,
                output,
                elapsed: finished.elapsed,
            }),
            Some(1) => Err(PuppetError::Compile {
                command,
                manifest,
                output,
            }),
            Some(code @ (4 | 6)) => Err(PuppetError::ResourceFailures {
                command,
                manifest,
                exit_code: code,
                changed: code == 6,
                output,
            }),
            _ => Err(PuppetError::Failed {
                command,
                status: finished.status.to_string(),
                output,
            }),
        }
    }
}

impl Applier for Puppet {
    fn apply(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        self.run_apply(&self.apply_invocation(manifest), manifest)
    }

    fn validate(&self, manifest: &Path) -> Result<(), PuppetError> {
        let mut invocation = self.validate_invocation(manifest);
        let _home = scratch_home(&mut invocation);
        let (success, output) = match self.validate_warm(manifest) {
            Some(verdict) => (verdict.status == 0, verdict.output),
            None => {
                let finished = self.run(&invocation)?;
                let output = String::from_utf8_lossy(&finished.stdout).into_owned();
                (finished.status.success(), output)
            }
        };
        if success {
            return Ok(());
        }
        Err(PuppetError::Invalid {
            command: invocation.shown(),
            manifest: manifest.to_path_buf(),
            output,
        })
    }

    /// `puppet apply --noop`, with Puppet's state in a temporary directory unless the site
    /// names one (`puppet.state_root`): a look at what would change must not write into
    /// `/var/cache/puppet` (last run summaries, reports) as if it had run.
    fn noop(&self, manifest: &Path) -> Result<ApplyReport, PuppetError> {
        let scratch = match self.vardir_root {
            Some(_) => None,
            None => tempfile::Builder::new().prefix("p2pu-noop-").tempdir().ok(),
        };
        let puppet = match &scratch {
            Some(dir) => Puppet {
                vardir_root: Some(dir.path().to_path_buf()),
                ..self.clone()
            },
            None => self.clone(),
        };
        let mut invocation = puppet.noop_invocation(manifest);
        let _home = scratch_home(&mut invocation);
        puppet.run_apply(&invocation, manifest)
    }

    fn module_install(
        &self,
        tarball: &Path,
        target_dir: &Path,
    ) -> Result<ModuleInstalled, PuppetError> {
        if !tarball.is_file() {
            return Err(PuppetError::TarballMissing {
                path: tarball.to_path_buf(),
            });
        }
        let tarball = std::path::absolute(tarball).map_err(|source| PuppetError::Path {
            path: tarball.to_path_buf(),
            source,
        })?;
        let invocation = self
            .invocation(&["module", "install"])
            .arg("--target-dir")
            .arg(not_a_flag(target_dir))
            // Dependencies would be looked up on the Forge; replacing an installed version
            // needs --force (without it Puppet refuses: "already installed").
            .arg("--ignore-dependencies")
            .arg("--force")
            .arg(tarball);
        let finished = self.run(&invocation)?;
        let output = String::from_utf8_lossy(&finished.stdout).into_owned();
        if finished.status.success() {
            Ok(ModuleInstalled { output })
        } else {
            Err(PuppetError::Failed {
                command: invocation.shown(),
                status: finished.status.to_string(),
                output,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `puppet apply` of a manifest with one failing file resource, in a
    /// container where Facter cannot read /proc/1/environ.
    const FAILED_OUTPUT: &str = "\
Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ
Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ
Notice: Compiled catalog for vm in environment production in 0.01 seconds
Error: Could not set 'file' on ensure: No such file or directory - A directory component in /tmp/x/nonexistent/x.lock does not exist (file: /tmp/x/fail.pp, line: 1)
Error: Could not set 'file' on ensure: No such file or directory - A directory component in /tmp/x/nonexistent/x.lock does not exist (file: /tmp/x/fail.pp, line: 1)
Wrapped exception:
No such file or directory
Error: /Stage[main]/Main/File[/tmp/x/nonexistent/x]/ensure: change from 'absent' to 'file' failed: Could not set 'file' on ensure
Notice: Applied catalog in 0.01 seconds
";

    /// Puppet 7 and 8 output as `puppet apply` and `puppet parser validate` print it, and the
    /// cause each failure is recorded with. Captured Puppet 7.23 runs are in
    /// tests/vectors/puppet/ (tests/engine_puppet.rs checks them against the real engine).
    #[test]
    fn the_cause_is_the_first_error_line_with_the_manifests_file_and_line() {
        let cases = [
            // Puppet 7, parser: a value missing.
            (
                "Error: Could not parse for environment production: Syntax error at '}' \
                 (file: /var/lib/p2pu/verified/ab-7/site.pp, line: 2, column: 32) on node vm\n",
                Some(
                    "Error: Could not parse for environment production: Syntax error at '}' \
                      (site.pp:2)",
                ),
            ),
            // Puppet 7, parser: a brace missing at the end names no line.
            (
                "Error: Could not parse for environment production: Syntax error at end of input \
                 (file: /tmp/pv/site.pp) on node vm\n",
                Some(
                    "Error: Could not parse for environment production: Syntax error at end of \
                      input (site.pp)",
                ),
            ),
            // Puppet 8, evaluation: an unknown class, after Facter's container noise.
            (
                "Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ\n\
                 Error: Evaluation Error: Error while evaluating a Function Call, Could not find \
                 class ::nope for n1.example.org (file: /srv/x/base.pp, line: 3, column: 1) on \
                 node n1.example.org\n\
                 Error: Evaluation Error: something later\n",
                Some(
                    "Error: Evaluation Error: Error while evaluating a Function Call, Could not \
                      find class ::nope for n1.example.org (base.pp:3)",
                ),
            ),
            // A failing resource: the first Error line names no file.
            (
                "Notice: Compiled catalog for vm in environment production in 0.01 seconds\n\
                 Error: '/bin/false' returned 1 instead of one of [0]\n\
                 Error: /Stage[main]/Main/Exec[fail]/returns: change from 'notrun' to ['0'] \
                 failed: '/bin/false' returned 1 instead of one of [0] (corrective)\n",
                Some("Error: '/bin/false' returned 1 instead of one of [0]"),
            ),
            // A file without a line.
            (
                "  Error: Could not find file /x/y.pp (file: /x/y.pp)  \n",
                Some("Error: Could not find file /x/y.pp (y.pp)"),
            ),
            // "on node" inside the message is kept.
            (
                "Error: failed on node setup step two\n",
                Some("Error: failed on node setup step two"),
            ),
            ("Notice: Applied catalog in 0.01 seconds\n", None),
            ("Error: Facter: only noise\n", None),
        ];
        for (output, want) in cases {
            assert_eq!(first_error(output).as_deref(), want, "{output}");
        }
        let failed = PuppetError::Compile {
            command: "puppet apply --detailed-exitcodes /v/site.pp".into(),
            manifest: "/v/site.pp".into(),
            output: cases[0].0.into(),
        };
        let cause = failed.cause().unwrap();
        assert!(!cause.contains("puppet apply"), "not the command: {cause}");
        let killed = PuppetError::TimedOut {
            command: "puppet apply x".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(killed.cause(), None);
    }

    #[test]
    fn noop_and_validate_run_the_commands_puppet_documents() {
        let puppet = Puppet {
            modulepath: vec![PathBuf::from("/m")],
            ..Puppet::default()
        };
        assert_eq!(
            puppet.validate_invocation(Path::new("site.pp")).shown(),
            "puppet parser validate --color=false ./site.pp"
        );
        assert_eq!(
            puppet.noop_invocation(Path::new("/s/site.pp")).shown(),
            "puppet apply --detailed-exitcodes --color=false --modulepath /m --noop /s/site.pp"
        );
    }

    #[test]
    fn digest_keeps_manifest_errors_once_and_drops_facter_noise() {
        let text = digest(FAILED_OUTPUT);
        assert!(!text.contains("Facter"), "{text}");
        assert_eq!(text.matches("Could not set 'file'").count(), 2, "{text}");
        assert!(text.contains("File[/tmp/x/nonexistent/x]/ensure"), "{text}");
    }

    #[test]
    fn digest_falls_back_to_the_last_lines() {
        assert_eq!(digest("a\nb\nc\nd\ne\nf\n"), "... | b | c | d | e | f");
        assert_eq!(
            digest("Error: Facter: only this\n"),
            "Error: Facter: only this"
        );
    }

    #[test]
    fn vardir_root_redirects_every_system_dir() {
        let puppet = Puppet {
            vardir_root: Some(PathBuf::from("/tmp/pr")),
            modulepath: vec![PathBuf::from("/m1"), PathBuf::from("/m2")],
            extra_flags: vec!["--noop".into()],
            ..Puppet::default()
        };
        let shown = puppet.apply_invocation(Path::new("site.pp")).shown();
        assert_eq!(
            shown,
            "puppet apply --detailed-exitcodes --color=false --vardir /tmp/pr/var \
             --logdir /tmp/pr/log --rundir /tmp/pr/run --ssldir /tmp/pr/ssl \
             --publicdir /tmp/pr/public --deviceconfdir /tmp/pr/devices \
             --modulepath /m1:/m2 --noop ./site.pp"
        );
    }

    #[test]
    fn without_vardir_root_puppet_keeps_its_defaults() {
        let shown = Puppet::default()
            .apply_invocation(Path::new("/srv/site.pp"))
            .shown();
        assert_eq!(
            shown,
            "puppet apply --detailed-exitcodes --color=false /srv/site.pp"
        );
    }

    #[test]
    fn missing_tarball_is_refused_before_puppet_runs() {
        // A binary that does not exist proves puppet was never started.
        let puppet = Puppet {
            binary: PathBuf::from("/nonexistent/puppet"),
            ..Puppet::default()
        };
        assert!(matches!(
            puppet.module_install(Path::new("/nonexistent/mod.tar.gz"), Path::new("/tmp")),
            Err(PuppetError::TarballMissing { .. })
        ));
    }

    /// Issue 29: `submit --noop` as root wrote Puppet's state (last run summary, reports)
    /// into /var/cache/puppet; it runs with every state dir under a temporary one, which is
    /// gone afterwards. A site's own `puppet.state_root` is kept.
    #[test]
    fn noop_keeps_puppets_state_in_a_temporary_dir() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("puppet");
        std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\nexit 0\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let puppet = Puppet {
            binary: fake.clone(),
            ..Puppet::default()
        };
        let report = puppet.noop(Path::new("/s/site.pp")).unwrap();
        let args = report.output.trim();
        let vardir = args
            .split(' ')
            .skip_while(|a| *a != "--vardir")
            .nth(1)
            .unwrap_or_else(|| panic!("no --vardir: {args}"));
        assert!(
            vardir.contains("p2pu-noop-") && vardir.ends_with("/var"),
            "{args}"
        );
        assert!(
            args.contains("--noop") && args.ends_with("/s/site.pp"),
            "{args}"
        );
        assert!(
            !Path::new(vardir).parent().unwrap().exists(),
            "the temporary state dir is removed"
        );
        let site = Puppet {
            binary: fake,
            vardir_root: Some(PathBuf::from("/srv/p")),
            ..Puppet::default()
        };
        let report = site.noop(Path::new("/s/site.pp")).unwrap();
        assert!(
            report.output.contains("--vardir /srv/p/var"),
            "{}",
            report.output
        );
    }
}
