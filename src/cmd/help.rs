//! The words around the clap definition: every command's examples, and the exit statuses and
//! files the man pages list. [`command`] is the one clap tree that parsing, `--help`, the
//! completions and the man pages all use, so an example added here shows everywhere.

use crate::cmd::Cli;
use clap::CommandFactory;

/// Examples per command path (the words after `p2pu`; "" is p2pu itself). Each example is a
/// `# what it does` line, then the command line. A test checks every command has some.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "# Set a node up from the fleet's config, then send it a manifest
p2pu init --config /etc/p2pu/site.toml
p2pu submit site.pp --wait
# Colour is only on a terminal; NO_COLOR turns it off (output is never paged)
NO_COLOR=1 p2pu fleet status",
    ),
    (
        "init",
        "# Render the configs and start exactly the services whose files changed
p2pu init --config /etc/p2pu/site.toml
# Show what would change, change nothing
p2pu init --dry-run
# Prepare an image's root file system (node-specific values are filled in at first boot)
p2pu init --config site.toml --root /mnt/image",
    ),
    (
        "handle-event",
        "# What Serf's event handler runs (internal; Serf sets SERF_EVENT and friends)
SERF_EVENT=query SERF_QUERY_NAME=p2pu-status p2pu handle-event </dev/null",
    ),
    (
        "agent",
        "# Run the node's agent in the foreground with debug logs (normally p2pu-agent.service)
p2pu agent --log p2pu=debug",
    ),
    (
        "agent-serve",
        "# Started by `p2pu agent` (internal)
p2pu agent-serve --tracker 127.0.0.1:6969 --seed 10.0.0.5:6880 --root /var/lib/p2pu/downloads",
    ),
    (
        "status",
        "# This node's newest update of each name, and rejected announcements
p2pu status
# Every kept record, as JSON
p2pu status --all --json
# In a script: exit 3 when an update failed here
p2pu status >/dev/null || echo \"p2pu: something failed\"
# For monitoring: one line; exit 6 when the agent is down, 5 when no fresh heartbeat is held, 3 when an update failed
p2pu status --check",
    ),
    (
        "verify",
        "# What a signature file from `submit --sign-only` is, and whether this node's keys take it
p2pu verify site.pp.sig
# An announcement bound to a rollout plan, with its plan, against other keys
p2pu verify wire.txt --with 0f1bd4f5b3916ded1eb2a2e0d828742ceecadfd7.plan --keys ./trusted
# A key statement before sending it, as JSON
p2pu verify 1a2b3c4d5e6f7a8b.delegation --json
# A wire text pasted on standard input
echo 'p2pu2:ZDM6...' | p2pu verify -",
    ),
    (
        "heartbeat",
        "# Sign and broadcast a heartbeat now (the timer init renders runs this)
p2pu heartbeat
# What was sent, as JSON
p2pu heartbeat --json",
    ),
    (
        "history",
        "# Every update this node kept, newest first, with attempts and reasons
p2pu history
# The past updates of one name, as JSON
p2pu history site.pp --json
# What changed in the last 2 hours, the newest 20
p2pu history --since 2h -n 20
# A given day (UTC), then keep watching for changes
p2pu history --since 2026-11-30 --follow",
    ),
    (
        "logs",
        "# What site.pp left on every node: Puppet's output, status and reason
p2pu logs site.pp
# Only node-7's, as JSON
p2pu logs site.pp --node node-7 --json
# The last 5 lines of each node's output, asked again every 2 s as the rollout goes on
p2pu logs site.pp -n 5 --follow",
    ),
    (
        "submit",
        "# Send a Puppet manifest to the fleet and wait until every alive member applied it
p2pu submit site.pp --wait
# See what a manifest would change on this node, sending nothing
p2pu submit site.pp --noop
# Send a directory as one archive, under a chosen name, printing JSON
p2pu submit ./motd --kind dir --name motd.tar.gz --json
# Send a plain file without progress output
p2pu submit --quiet --kind file firmware.bin
# A name that needs two signatures: sign (and seed) here without sending ...
p2pu submit base.pp --sign-only base.sig
# ... the co-signer signs that file with their key, on their machine ...
p2pu submit --sign-only base.sig2 --with-sig base.sig
# ... and both signatures go out together
p2pu submit --with-sig base.sig base.sig2 --wait
# In a script: 0 applied everywhere, 1 failed somewhere, 2 timed out, 3 halted
p2pu submit site.pp --wait --quiet --timeout 900; echo $?

# Only the cameras, in waves that halt after more than 2 failures, 5 minutes apart
p2pu submit cam.pp --target role=camera --waves 1,10%,50%,100% --max-failures 2 --wave-wait 5m
# Download now everywhere, apply only at night on weekdays (each node's local time)
p2pu submit site.pp --window 'Mon-Fri 02:00-04:00'",
    ),
    (
        "sync",
        "# Check for updates now (what the agent does every agent.catch_up_secs) and apply them
p2pu sync
# In a script after a reboot: 0 up to date, 3 an update failed here, 4 not settled in time
p2pu sync --timeout 120 --json > /var/tmp/p2pu-sync.json; echo $?",
    ),
    (
        "mark-good",
        "# The person who is the health check approves site.pp on this node: its check ends as
# passed, and the next wave of its rollout may go on
p2pu mark-good site.pp
# Confirm an update already applied, as JSON
p2pu mark-good site.pp --json",
    ),
    (
        "mark-bad",
        "# Undo site.pp on this node: apply the good version kept from before it again
p2pu mark-bad site.pp
# A given seq, waiting up to 10 minutes for the revert, in a script
p2pu mark-bad app.zip --seq 1764950400000 --timeout 600 --json; echo $?",
    ),
    (
        "fleet",
        "# Which members applied what
p2pu fleet status",
    ),
    (
        "fleet status",
        "# Every member's updates, address, version and newest update's age
p2pu fleet status
# Only the cameras and door-1, as rows for a script (no header, no colour)
p2pu fleet status --node 'cam-*,door-1' --plain
# Only site.pp, waiting up to 10 s for answers, as JSON
p2pu fleet status site.pp --timeout 10 --json
# Several names: each member answers with these alone, so none is left out of a long answer
p2pu fleet status site.pp motd.tar.gz
# In a script: 0 all well, 3 something failed, 4 someone did not answer
p2pu fleet status >/dev/null; echo $?
# Follow the newest rollout, redrawn every 2 s, until every member is done with it
p2pu fleet status --watch
# The same for a script: one JSON document per refresh, one per line
p2pu fleet status site.pp --watch --interval 5 --json",
    ),
    (
        "fleet serve",
        "# A live page of the fleet on this machine's loopback; open the URL it prints
p2pu fleet serve
# On the LAN, with a token from a file (at least 16 characters) and the abort, resume and
# retry buttons, signed with this node's key
p2pu fleet serve --listen 0.0.0.0:8080 --token-file /etc/p2pu/dashboard.token --allow-actions
# From the operator's machine: tunnel a node's loopback dashboard over SSH
ssh -L 8080:127.0.0.1:8080 cam-01 p2pu fleet serve",
    ),
    (
        "rollout",
        "# Stop a rollout, retry where it failed once the cause is fixed, let it go on
p2pu rollout abort site.pp
p2pu rollout retry site.pp --nodes 'cam-*'
p2pu rollout resume site.pp
p2pu rollout revert site.pp",
    ),
    (
        "rollout abort",
        "# Every node that has not applied site.pp holds (halted: aborted by operator)
p2pu rollout abort site.pp",
    ),
    (
        "rollout resume",
        "# Halted nodes go on, past --max-failures
p2pu rollout resume site.pp --json",
    ),
    (
        "rollout retry",
        "# The nodes where site.pp failed try again now
p2pu rollout retry site.pp
# Only two of them, and a seq this node has no record of
p2pu rollout retry site.pp --seq 1764480000000 --nodes cam-1,cam-2",
    ),
    (
        "rollout revert",
        "# Every node that applied the newest site.pp goes back to the last good version
p2pu rollout revert site.pp
# To a given earlier seq (still kept on the nodes), on the cameras only
p2pu rollout revert site.pp --to 1764480000000 --nodes 'cam-*'",
    ),
    (
        "torrent",
        "# Make a .torrent and look inside it
p2pu torrent create payload.bin --tracker http://10.0.0.1:6969/announce
p2pu torrent show payload.bin.torrent",
    ),
    (
        "torrent create",
        "# A private torrent with 1 MiB pieces, written to /tmp/site.torrent
p2pu torrent create ./site --piece-size 1M --private -o /tmp/site.torrent
# The same bytes every time (no date, no creator)
p2pu torrent create payload.bin --reproducible",
    ),
    (
        "torrent show",
        "# Name, info-hash, size, trackers and files
p2pu torrent show payload.bin.torrent
# The same as JSON
p2pu torrent show payload.bin.torrent --json",
    ),
    (
        "keygen",
        "# A signing key for this node, then trust it on every node
p2pu keygen --out /etc/p2pu/keys
p2pu key trust /etc/p2pu/keys/signing.pub --dir /etc/p2pu/trusted-keys",
    ),
    (
        "key",
        "# Trusted keys and revoked key ids
p2pu key list --dir /etc/p2pu/trusted-keys",
    ),
    (
        "key id",
        "# The key id of a public or secret key file
p2pu key id /etc/p2pu/keys/signing.pub",
    ),
    (
        "key trust",
        "# Accept announcements signed by this key
p2pu key trust ops.pub --dir /etc/p2pu/trusted-keys",
    ),
    (
        "key revoke",
        "# Refuse announcements signed by a lost key
p2pu key revoke 0123456789abcdef --dir /etc/p2pu/trusted-keys --reason \"laptop stolen\"",
    ),
    (
        "key list",
        "# One `<kid> <comment>` or `<kid> revoked` a line
p2pu key list --dir /etc/p2pu/trusted-keys
# As JSON
p2pu key list --dir /etc/p2pu/trusted-keys --json",
    ),
    (
        "key delegate",
        "# The camera team's key may sign cam-* manifests and files for camera nodes only
p2pu key delegate --key camera-team.pub --names 'cam-*' --kinds manifest,file \\
  --target tag:role=camera --sign root-a.key --out cameras.delegation
# A second root key signs it too, then it is sent as a key update
p2pu key delegate --with-sig cameras.delegation --sign root-b.key --out cameras.delegation
p2pu submit cameras.delegation",
    ),
    (
        "key rotate-root",
        "# New root keys, 2 of 3 needed; signed by the old roots and by the new ones
p2pu key rotate-root --keys a.pub,b.pub,c.pub --threshold 2 --dir /etc/p2pu/trusted-keys \\
  --sign old-1.key --sign old-2.key --sign a.key --sign b.key
p2pu submit p2pu-root",
    ),
    (
        "config",
        "# Is this site.toml valid?
p2pu config check --config site.toml",
    ),
    (
        "config check",
        "# Validate before baking it into an image
p2pu config check --config ./site.toml",
    ),
    (
        "config show",
        "# Every setting with its default filled in
p2pu config show --config /etc/p2pu/site.toml",
    ),
    (
        "config-get",
        "# One value, defaults applied (for shell scripts)
p2pu config-get agent.state_dir",
    ),
    (
        "completions",
        "# Bash completion for this shell session
source <(p2pu completions bash)",
    ),
    (
        "complete",
        "# The update names this node has, for the shell's completion (internal)
p2pu complete names
# The fleet's member names
p2pu complete nodes",
    ),
    (
        "man",
        "# Read the page of p2pu submit without installing it
p2pu man --out /tmp/man && man /tmp/man/p2pu-submit.1",
    ),
    (
        "lab",
        "# Five nodes in a network namespace; watch an update reach them all
p2pu lab --nodes 5
# Keep the lab running afterwards (Ctrl-C tears it down)
p2pu lab --keep --dir /tmp/lab",
    ),
    (
        "proxy",
        "# The NAT rendezvous on a public host (normally p2pu-proxy.service)
p2pu proxy --config /etc/p2pu/site.toml",
    ),
    (
        "nat-client",
        "# A node behind NAT, in the foreground (normally p2pu-nat-client.service)
p2pu nat-client --config /etc/p2pu/site.toml",
    ),
    (
        "event",
        "# Open a session with node-7 and check it
p2pu event talkto node-7
p2pu event status",
    ),
    (
        "event talkto",
        "# Hole-punch to node-7 (through the proxy's relay if punching fails)
p2pu event talkto node-7",
    ),
    (
        "event sendfile",
        "# Send a manifest to the session peers over the overlay
p2pu event sendfile site.pp",
    ),
    (
        "event announce",
        "# Send a ready signed announcement read from stdin
p2pu event announce - <announcement.txt",
    ),
    (
        "event endsession",
        "# End every session
p2pu event endsession",
    ),
    (
        "event exit",
        "# Say goodbye to the peers and stop the NAT client
p2pu event exit",
    ),
    (
        "event status",
        "# Mapped address, NAT behaviour and session peers, as JSON
p2pu event status --json",
    ),
];

/// Exit statuses beyond the common ones, per command path.
pub const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "init",
        "With --detailed-exitcodes: 0 when nothing changed, 2 when something changed (or would, \
         with --dry-run), 1 on error.",
    ),
    (
        "status",
        "3 when the newest record of some update on this node failed (or was reverted by the \
         health check). With --check: 6 when the agent is not running or its state dir does \
         not exist; 5 when this node holds no heartbeat signed within \
         agent.heartbeat_window_secs (never received, or stale: updates may be withheld from it), \
         else 3 or 0 as without it.",
    ),
    (
        "fleet status",
        "3 when some member's update failed; else 4 when some member did not answer.",
    ),
    (
        "sync",
        "0 when this node is up to date (nothing was missing, or all of it was applied); 3 when \
         an update failed here; 4 when one had not settled by --timeout, waits for its wave or \
         halted, or no other member was alive to ask; 1 when the agent did not answer or could \
         not ask the fleet.",
    ),
    (
        "mark-good",
        "0 when the update is applied; 3 when it settled otherwise (its check failed before the \
         verdict came); 4 when it had not settled by --timeout; 1 when the verdict was refused \
         (no record, not applied nor being checked) or the agent did not answer.",
    ),
    (
        "mark-bad",
        "0 when the update was reverted to the kept good version; 3 when it settled otherwise \
         (the revert failed); 4 when it had not settled by --timeout; 1 when the verdict was \
         refused (no record, nothing kept to revert to, not applied nor being checked) or the \
         agent did not answer.",
    ),
    (
        "verify",
        "0 when the file is valid; 3 when it is not (malformed, tampered, signed by keys not \
         trusted here or too few of them, another fleet's, expired); 4 when it is well-formed \
         but carries no signature of its own (a plan or snapshot without --with, a public key, a \
         revocation, a root chain that changes nothing); 1 when the file or the keys could not \
         be read.",
    ),
    (
        "submit",
        "With --wait: 0 when every targeted member applied the update; 1 when it failed \
         somewhere (failed, or reverted by a member's health check); 2 when some member had not \
         settled it when --timeout ran out; 3 when the rollout halted.",
    ),
];

/// The common exit statuses (every command).
pub const COMMON_EXIT_STATUS: &str = "0 on success; 1 when the command could not do its job (a \
bad config, unreadable state, an engine that does not answer), with one line on standard error \
naming what is wrong; 2 when the command line is wrong.";

/// Files every page lists (defaults; site.toml can move all but itself).
pub const FILES: &[(&str, &str)] = &[
    (
        "/etc/p2pu/site.toml",
        "the site config (--config, P2PU_CONFIG); see site.toml(5)",
    ),
    (
        "/etc/p2pu/keys/signing.key",
        "this node's signing key (agent.signing_key), mode 0600",
    ),
    (
        "/etc/p2pu/trusted-keys/",
        "the public keys whose announcements are applied (agent.trusted_keys_dir)",
    ),
    (
        "/var/lib/p2pu/",
        "the agent's state: what was applied, failed or rejected (agent.state_dir)",
    ),
    (
        "/var/spool/p2pu/",
        "announcements waiting for the agent (agent.spool_dir)",
    ),
    (
        "/var/lib/p2pu/downloads/",
        "payloads seeded by Transmission (transmission.download_dir)",
    ),
];

/// The text after the `Examples:` heading, indented as clap prints it.
fn examples_text(examples: &str) -> String {
    let mut out = String::from("Examples:\n");
    for line in examples.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// The examples of the command at `path` (words after `p2pu`).
pub fn examples(path: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

fn with_examples(cmd: clap::Command, path: &str) -> clap::Command {
    let mut cmd = match examples(path) {
        Some(e) => cmd.after_help(examples_text(e)),
        None => cmd,
    };
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |sub| with_examples(sub, &sub_path));
    }
    cmd
}

/// The command line as parsed and documented: the derive definition plus the examples.
pub fn command() -> clap::Command {
    with_examples(Cli::command(), "")
}

/// Every command path (words after `p2pu`), hidden ones included, depth first.
pub fn paths(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let path = if prefix.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{prefix} {}", sub.get_name())
            };
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = vec![String::new()];
    walk(cmd, "", &mut out);
    out
}

/// The subcommand at `path`.
pub fn find<'a>(cmd: &'a clap::Command, path: &str) -> Option<&'a clap::Command> {
    path.split_whitespace()
        .try_fold(cmd, |cmd, word| cmd.find_subcommand(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(path: &str) -> String {
        let mut args = vec!["p2pu".to_string()];
        args.extend(path.split_whitespace().map(str::to_string));
        args.push("--help".into());
        let err = command().try_get_matches_from(args).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{path}");
        err.render().to_string()
    }

    #[test]
    fn every_command_help_shows_an_example_of_itself() {
        let cmd = command();
        let paths = paths(&cmd);
        assert!(paths.len() > 30, "{paths:?}");
        for path in paths {
            let text = help(&path);
            let invocation = format!("p2pu {path}").trim_end().to_string();
            assert!(text.contains("Examples:"), "`{invocation} --help`:\n{text}");
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(&invocation)
                    || l.contains(&format!(" {invocation}"))),
                "`{invocation} --help` has no example running it:\n{text}"
            );
        }
    }

    /// Issue 29: every command that writes a file takes `-o/--out`; the names they had
    /// before (`--output`, `--out-dir`) still parse, so scripts do not break, but are not shown.
    #[test]
    fn one_output_flag_name_with_the_old_ones_as_hidden_aliases() {
        let cmd = command();
        for path in [
            "keygen",
            "key delegate",
            "key rotate-root",
            "torrent create",
            "man",
        ] {
            let text = help(path);
            assert!(
                text.contains("-o, --out <"),
                "`p2pu {path} --help`:\n{text}"
            );
            assert!(
                !text.contains("--output") && !text.contains("--out-dir"),
                "`p2pu {path} --help` shows an old name:\n{text}"
            );
        }
        for (old, args) in [
            ("--output", &["torrent", "create", "x", "--output", "f"][..]),
            ("--out-dir", &["man", "--out-dir", "d"][..]),
        ] {
            let argv = std::iter::once("p2pu").chain(args.iter().copied());
            assert!(
                cmd.clone().try_get_matches_from(argv).is_ok(),
                "{old} no longer parses"
            );
        }
    }

    #[test]
    fn every_example_belongs_to_a_command() {
        let cmd = command();
        for (path, _) in EXAMPLES.iter().chain(EXIT_STATUS) {
            assert!(find(&cmd, path).is_some(), "no command `p2pu {path}`");
        }
    }

    #[test]
    fn every_visible_command_and_value_is_described() {
        let cmd = command();
        for path in paths(&cmd).iter().filter(|p| !p.is_empty()) {
            let sub = find(&cmd, path).unwrap();
            assert!(
                sub.get_about().is_some(),
                "`p2pu {path}` has no description"
            );
            if sub.is_hide_set() {
                continue;
            }
            for arg in sub
                .get_arguments()
                .filter(|a| a.get_action().takes_values())
            {
                for value in arg.get_possible_values() {
                    if value.is_hide_set() {
                        continue;
                    }
                    assert!(
                        value.get_help().is_some(),
                        "`p2pu {path} --{}` value `{}` is not described",
                        arg.get_id(),
                        value.get_name()
                    );
                }
            }
        }
        let submit = help("submit");
        assert!(
            submit.contains("manifest") && submit.contains("puppet apply"),
            "{submit}"
        );
    }

    #[test]
    fn plumbing_is_not_listed_among_operator_commands() {
        let top = help("");
        for plumbing in ["handle-event", "agent-serve", "config-get", "completions"] {
            assert!(
                !top.lines().any(|l| l.trim_start().starts_with(plumbing)),
                "{plumbing} listed:\n{top}"
            );
        }
        assert!(
            top.contains("fleet") && top.contains("Ask every member"),
            "{top}"
        );
    }
}
