//! `p2pu completions <shell>` and `p2pu man`: generate shell completions and the man pages from
//! the clap definition (and site.toml(5) from install/site.example.toml), so the Debian package
//! ships files that always match the binary.
//! Both are hidden: packagers and install/build-deb.sh call them, operators never need to.

use crate::cmd::{help, Outcome};
use crate::config::SiteToml;
use crate::error::Error;
use crate::{Env, Result};
use clap::builder::Resettable;
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
        let mut command = help::command();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut command, "p2pu", &mut out);
        if self.shell == clap_complete::Shell::Bash {
            // Update and node names, which clap's static script cannot know.
            out.extend_from_slice(BASH_DYNAMIC.as_bytes());
        }
        env.stdout
            .write_all(&out)
            .map_err(Error::io("writing to", "standard output"))?;
        Ok(Outcome::Success)
    }
}

/// Appended to clap's bash script: after its own completion, offers update names where a
/// command takes NAME and node names after `--node`/`--nodes`, from `p2pu complete` (`src/cmd/complete.rs`). The words
/// are matched with a loop, not `compgen -W`, which would expand `$(...)` in them.
pub const BASH_DYNAMIC: &str = r#"
# Update and node names (p2pu complete names|nodes): matched by prefix, never expanded.
_p2pu_words() {
    local word
    while IFS= read -r word; do
        [[ $word == "$2"* ]] && COMPREPLY+=("$word")
    done < <(command p2pu complete "$1" 2>/dev/null)
}
_p2pu_with_names() {
    _p2pu "$@"
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --node|--nodes) COMPREPLY=(); _p2pu_words nodes "$cur"; return ;;
    esac
    [[ $cur == -* ]] && return
    case " ${COMP_WORDS[*]:1:2} " in
        *" history "*|*" logs "*|*" mark-good "*|*" mark-bad "*|*" rollout "*|*" fleet status "*)
            _p2pu_words names "$cur" ;;
    esac
}
complete -F _p2pu_with_names -o bashdefault -o default p2pu
"#;

/// Print the p2pu(1) man page, or write every page to a directory.
///
/// Pages: p2pu(1), p2pu-COMMAND(1) for each command (p2pu-fleet-status(1) for `fleet status`)
/// and site.toml(5), generated from the same definitions as `--help` and from
/// install/site.example.toml.
#[derive(Debug, clap::Args)]
pub struct Man {
    /// Write p2pu.1, p2pu-*.1 and site.toml.5 into DIR (created if missing) instead.
    // `--out-dir`, its name before issue 29, still parses (build-deb.sh uses it), unshown.
    #[arg(short = 'o', long = "out", alias = "out-dir", value_name = "DIR")]
    out_dir: Option<std::path::PathBuf>,
}

impl Man {
    pub fn run(self, env: &mut Env) -> Result<Outcome> {
        let pages = man_pages()?;
        let Some(dir) = self.out_dir else {
            let top = &pages[0].1;
            env.stdout
                .write_all(top)
                .map_err(Error::io("writing to", "standard output"))?;
            return Ok(Outcome::Success);
        };
        let dir = env.resolve(&dir);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        for (name, bytes) in &pages {
            crate::fsutil::write_atomic(&dir.join(name), bytes, 0o644)?;
            writeln!(env.stdout, "{name}").map_err(Error::io("writing to", "standard output"))?;
        }
        Ok(Outcome::Success)
    }
}

/// Every page as (file name, roff): p2pu.1 first, then one per visible command, then
/// site.toml.5.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut root = help::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    command_pages(&root, "", None, &mut pages)?;
    pages.push(("site.toml.5".to_string(), site_toml_page().into_bytes()));
    Ok(pages)
}

const MANUAL: &str = "p2pu manual";

fn command_pages(
    cmd: &clap::Command,
    path: &str,
    parent: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let man = clap_mangen::Man::new(cmd.clone().after_help(Resettable::Reset))
        .date(env!("P2PU_BUILD_DATE"))
        .source(format!("p2pu {}", env!("CARGO_PKG_VERSION")))
        .manual(MANUAL);
    let mut out = Vec::new();
    man.render(&mut out)
        .map_err(Error::io("rendering the man page to", "memory"))?;
    out.extend_from_slice(extra_sections(cmd, path, parent).as_bytes());
    pages.push((man.get_filename(), out));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_path = format!("{path} {}", sub.get_name()).trim().to_string();
        command_pages(sub, &sub_path, Some(&title), pages)?;
    }
    Ok(())
}

/// EXAMPLES, EXIT STATUS, FILES and SEE ALSO, which clap_mangen does not write.
fn extra_sections(cmd: &clap::Command, path: &str, parent: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(examples) = help::examples(path) {
        out.push_str(".SH EXAMPLES\n");
        out.push_str(&examples_roff(examples));
    }
    out.push_str(".SH \"EXIT STATUS\"\n");
    out.push_str(&roff_line(help::COMMON_EXIT_STATUS));
    if let Some((_, extra)) = help::EXIT_STATUS.iter().find(|(p, _)| *p == path) {
        out.push_str(".PP\n");
        out.push_str(&roff_line(extra));
    }
    out.push_str(".SH FILES\n");
    for (file, what) in help::FILES {
        out.push_str(&format!(
            ".TP\n.I {}\n{}",
            roff_escape(file),
            roff_line(what)
        ));
    }
    out.push_str(".SH \"SEE ALSO\"\n");
    let mut see: Vec<String> = parent.iter().map(|p| format!("{p}(1)")).collect();
    if parent.is_some_and(|p| p != "p2pu") {
        see.insert(0, "p2pu(1)".into());
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    see.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("{name}-{}(1)", s.get_name())),
    );
    see.push("site.toml(5)".into());
    see.extend(["serf(1)", "transmission-daemon(1)", "puppet(8)"].map(String::from));
    out.push_str(&roff_line(&see.join(", ")));
    out
}

/// `# what` lines become paragraphs, command lines unfilled and indented.
fn examples_roff(examples: &str) -> String {
    let mut out = String::new();
    for line in examples.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            out.push_str(".PP\n");
            out.push_str(&roff_line(comment.trim()));
        } else {
            out.push_str(".RS 4\n.nf\n");
            out.push_str(&roff_line(line));
            out.push_str(".fi\n.RE\n");
        }
    }
    out
}

/// Text for roff: backslashes and hyphens escaped (so `--json` stays two ASCII hyphens).
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// One line of running text; a leading `.` or `'` would be read as a request.
fn roff_line(text: &str) -> String {
    let text = roff_escape(text);
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}\n")
    } else {
        format!("{text}\n")
    }
}

/// site.toml(5), from install/site.example.toml: its header comment is the description, each
/// `[section]` a subsection, each key (commented out when it has no default) an entry with its
/// default and its comment.
pub fn site_toml_page() -> String {
    let example = include_str!("../../install/site.example.toml");
    let mut out = format!(
        ".TH site.toml 5 \"{}\" \"p2pu {}\" \"{MANUAL}\"\n",
        env!("P2PU_BUILD_DATE"),
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(".SH NAME\nsite.toml \\- the p2pu site config\n");
    out.push_str(".SH SYNOPSIS\n.I /etc/p2pu/site.toml\n.SH DESCRIPTION\n");
    let mut in_section = false;
    let mut section = String::new();
    let mut described: Vec<String> = Vec::new();
    for line in example.lines() {
        let line = line.trim_end();
        if line.starts_with('[') {
            if !in_section {
                out.push_str(".PP\n");
                out.push_str(&roff_line(
                    "Check a file with p2pu config check and see every value it resolves to \
                     with p2pu config show.",
                ));
                out.push_str(".SH SETTINGS\n");
            }
            in_section = true;
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            described.push(section.clone());
            out.push_str(&format!(".SS {}\n", roff_escape(line)));
            continue;
        }
        let commented = line.trim_start().strip_prefix('#').map(str::trim_start);
        let setting = match commented {
            Some(rest) => key_line(rest).map(|kv| (kv, true)),
            None => key_line(line).map(|kv| (kv, false)),
        };
        match (setting, commented) {
            (Some(((key, value, note), optional)), _) if in_section => {
                described.push(format!("{section}.{key}"));
                out.push_str(&format!(".TP\n\\fB{}\\fR", roff_escape(key)));
                if optional {
                    out.push_str(" (optional)\n");
                    let example = format!("For example {key} = {value}.");
                    let text = if note.is_empty() {
                        example
                    } else {
                        format!("{example} {}{}", upper_first(note), stop(note))
                    };
                    out.push_str(&roff_line(&text));
                } else {
                    out.push_str(&format!(" = {}\n", roff_escape(value)));
                    if !note.is_empty() {
                        out.push_str(&roff_line(note));
                    }
                }
            }
            (_, Some(text)) if !text.is_empty() => {
                if !in_section {
                    out.push_str(".PP\n");
                }
                out.push_str(&roff_line(text));
            }
            _ => {}
        }
    }
    out.push_str(&undocumented_settings(&described));
    out.push_str(".SH EXAMPLES\n");
    out.push_str(&examples_roff(
        "# Validate a site.toml, then show it with every default filled in
p2pu config check --config site.toml
p2pu config show --config site.toml",
    ));
    out.push_str(".SH FILES\n.TP\n.I /etc/p2pu/site.toml\n");
    out.push_str(&roff_line(
        "the site config that every p2pu command reads by default",
    ));
    out.push_str(".TP\n.I /usr/share/doc/p2pu/site.example.toml\n");
    out.push_str(&roff_line("every key with its default and a comment"));
    out.push_str(".SH \"SEE ALSO\"\n");
    out.push_str(&roff_line("p2pu(1), p2pu-init(1), p2pu-config(1)"));
    out
}

/// Settings p2pu knows that the example file does not show, with their defaults, so the page
/// is complete even when the example lags behind the code.
fn undocumented_settings(described: &[String]) -> String {
    let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(SiteToml::default()) else {
        return String::new();
    };
    let mut out = String::new();
    for (section, table) in &defaults {
        let Some(table) = table.as_table() else {
            continue;
        };
        let missing: Vec<_> = table
            .iter()
            // A table (serf.tags) counts as described when the example has its section.
            .filter(|(key, _)| !described.contains(&format!("{section}.{key}")))
            .collect();
        if missing.is_empty() {
            continue;
        }
        out.push_str(&format!(".SS [{section}]\n"));
        for (key, value) in missing {
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR = {}\n",
                roff_escape(key),
                roff_escape(&value.to_string())
            ));
        }
    }
    out
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A full stop unless the note already ends a sentence.
fn stop(note: &str) -> &'static str {
    if note.ends_with(['.', ')', '!', '?']) {
        ""
    } else {
        "."
    }
}

/// `key = value  # note` as (key, value, note); `None` for anything else.
fn key_line(line: &str) -> Option<(&str, &str, &str)> {
    let (key, rest) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let quoted = key.len() > 2 && key.starts_with('"') && key.ends_with('"');
    if key.is_empty() || !(key.chars().all(bare) || quoted) {
        return None;
    }
    // The note starts at the first `#` outside a string.
    let mut in_string = false;
    let mut split = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => {
                split = i;
                break;
            }
            _ => {}
        }
    }
    let value = rest[..split].trim();
    let note = rest[split..].trim_start_matches('#').trim();
    (!value.is_empty()).then_some((key, value, note))
}

#[cfg(test)]
mod tests {
    use crate::cmd::testing::run;

    /// Stdout of `p2pu <args>`, which must succeed.
    fn output(args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, 0, "{err}");
        out
    }

    #[test]
    fn bash_completion_knows_the_commands() {
        let out = output(&["completions", "bash"]);
        assert!(out.contains("_p2pu()"), "{out}");
        assert!(out.contains("init"), "{out}");
    }

    #[test]
    fn man_pages_exist_for_every_command_they_refer_to() {
        let dir = tempfile::tempdir().unwrap();
        let listed = output(&["man", "--out-dir", dir.path().to_str().unwrap()]);
        let names: Vec<&str> = listed.lines().collect();
        for page in [
            "p2pu.1",
            "p2pu-submit.1",
            "p2pu-fleet-status.1",
            "site.toml.5",
        ] {
            assert!(names.contains(&page), "{page} not in {names:?}");
        }
        for hidden in ["p2pu-handle-event.1", "p2pu-agent-serve.1", "p2pu-help.1"] {
            assert!(!names.contains(&hidden), "{hidden} generated");
        }
        let reference = regex_free_references;
        for name in &names {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            for section in [".SH EXAMPLES", ".SH \"EXIT STATUS\"", ".SH FILES"] {
                let wanted = name.ends_with(".1") || !section.contains("EXIT");
                assert!(!wanted || text.contains(section), "{name} has no {section}");
            }
            for (page, section) in reference(&text) {
                let file = format!("{page}.{section}");
                assert!(
                    names.contains(&file.as_str()),
                    "{name} refers to {page}({section}), which is not generated"
                );
            }
        }
        let submit = std::fs::read_to_string(dir.path().join("p2pu-submit.1")).unwrap();
        assert!(
            submit.contains("p2pu submit site.pp \\-\\-wait"),
            "{submit}"
        );
        assert!(submit.contains(".TH p2pu-submit 1"), "{submit}");
    }

    /// `p2pu-NAME(1)` and `site.toml(5)` references in a page (escaped hyphens undone).
    fn regex_free_references(text: &str) -> Vec<(String, String)> {
        let text = text.replace("\\-", "-");
        let mut out = Vec::new();
        for (start, _) in text.match_indices("p2pu") {
            let rest = &text[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            let (page, tail) = rest.split_at(end);
            if let Some(section) = tail.strip_prefix('(').and_then(|t| t.get(..1)) {
                if tail.get(2..3) == Some(")") {
                    out.push((page.to_string(), section.to_string()));
                }
            }
        }
        if text.contains("site.toml(5)") {
            out.push(("site.toml".into(), "5".into()));
        }
        out
    }

    #[test]
    fn site_toml_page_describes_every_setting() {
        let page = super::site_toml_page();
        let defaults = crate::config::Config::from_str(std::path::Path::new("site.toml"), "", None)
            .unwrap()
            .site;
        let whole = toml::Value::try_from(&defaults).unwrap();
        let mut missing = Vec::new();
        for (section, table) in whole.as_table().unwrap() {
            assert!(page.contains(&format!(".SS [{section}]")), "no [{section}]");
            for (key, value) in table.as_table().into_iter().flatten() {
                let shown = if value.is_table() {
                    format!(".SS [{section}.{key}]")
                } else {
                    format!("\\fB{key}\\fR")
                };
                if !page.contains(&shown) {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        assert!(missing.is_empty(), "site.toml(5) lacks {missing:?}");
        assert!(page.starts_with(".TH site.toml 5"), "{page}");
    }

    #[test]
    fn man_page_is_roff_for_p2pu() {
        let out = output(&["man"]);
        assert!(out.starts_with(".ie"), "{}", &out[..out.len().min(200)]);
        assert!(out.contains(".TH p2pu 1"), "{out}");
    }
}
