//! Log lines are words, not Rust: issue 29 found `counters=Counters { stun_answered: 3, ... }`
//! in the proxy's journal. Every `tracing` event and `eprintln!` in `src/` (tests aside) must
//! format its fields with `%` or as plain values, never with `?`/`{:?}` (Debug), which prints
//! structs, `Some(..)` and quoted strings. A textual check: a field that needs Debug gets a
//! Display (or an `as_str`) instead.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of each logging macro call in `code` (up to its matching parenthesis), with the
/// line it starts on; the file's `#[cfg(test)]` part is skipped.
fn log_calls(code: &str) -> Vec<(usize, String)> {
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    let mut calls = Vec::new();
    for start in [
        "tracing::trace!(",
        "tracing::debug!(",
        "tracing::info!(",
        "tracing::warn!(",
        "tracing::error!(",
        "eprintln!(",
    ] {
        for (at, _) in code.match_indices(start) {
            let body = &code[at + start.len()..];
            let (mut depth, mut in_str, mut escaped, mut end) = (1i32, false, false, body.len());
            for (i, c) in body.char_indices() {
                match (in_str, c) {
                    (true, '\\') if !escaped => {
                        escaped = true;
                        continue;
                    }
                    (true, '"') if !escaped => in_str = false,
                    (false, '"') => in_str = true,
                    (false, '(') => depth += 1,
                    (false, ')') => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
                escaped = false;
            }
            let line = code[..at].lines().count();
            calls.push((line, body[..end].to_string()));
        }
    }
    calls
}

/// A Debug field (`?x`, `x = ?y`) or a Debug placeholder (`{:?}`, `{x:?}`, `{:#?}`).
fn debug_formatting(call: &str) -> bool {
    let bytes = call.as_bytes();
    let sigil = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'?'
            && bytes
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_')
            && (i == 0 || matches!(bytes[i - 1], b' ' | b',' | b'(' | b'\n'))
    });
    sigil || call.contains(":?}") || call.contains(":#?}")
}

#[test]
fn log_lines_print_words_not_debug_dumps() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        for (line, call) in log_calls(&code) {
            if debug_formatting(&call) {
                found.push(format!("{}:{line}: {}", file.display(), call.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "Debug formatting in log lines:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_each_kind_of_debug_formatting() {
    for dump in [
        "counters = ?state.counters, \"stopping\"",
        "?addrs, \"x\"",
        "\"a {:?}\", b",
        "\"a {b:?}\"",
        "\"{:#?}\", x",
    ] {
        assert!(debug_formatting(dump), "{dump}");
    }
    for words in [
        "counters = %state.counters, \"stopping\"",
        "seq, \"what? no\"",
        "\"a {b}\"",
    ] {
        assert!(!debug_formatting(words), "{words}");
    }
    let calls = log_calls("fn f() { tracing::info!(x = ?a.b(c), \"y\"); }\n#[cfg(test)]\nfn g() { tracing::info!(?z); }");
    assert_eq!(calls, vec![(1, "x = ?a.b(c), \"y\"".to_string())]);
}
