//! The shape of `src/`: which file imports which (issue #19, "one house"). Reads the sources,
//! resolves every `crate::`/`super::`/`self::` path (and relative paths to declared child
//! modules, and names a module re-exports with `pub use`) to the file that defines it, and checks
//! the resulting file-level graph: no circle, and commands as leaves that only the dispatcher
//! imports. A textual reader, not a compiler: it strips comments and literals, tracks inline
//! `mod x { .. }` blocks so `super::` inside `mod tests` means the file itself, and ignores
//! `mod` declarations (declaring a child is not importing it). A file reaching up to its own
//! parent module (`super::LabError` in `lab/netns.rs`, `crate::cmd::Outcome` in a command) is not
//! an edge either: the parent module file is the facade its children share, and it may use them;
//! what must not circle is siblings and unrelated modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path (`["agent", "fetch"]`, empty for lib.rs) and its text with
/// comments and literals blanked out.
struct SourceFile {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && (stem == "lib" || stem == "main"))) {
        parts.push(stem.to_string());
    }
    parts
}

/// Blanks comments, string and char literals (keeping newlines and byte offsets), so braces and
/// `crate::` inside them are not read as code.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r')))
            && (i == 0 || !is_ident(b[i - 1]))
            && {
                let s = if c == b'b' { i + 2 } else { i + 1 };
                let mut k = s;
                while b.get(k) == Some(&b'#') {
                    k += 1;
                }
                b.get(k) == Some(&b'"')
            }
        {
            let s = if c == b'b' { i + 2 } else { i + 1 };
            let mut k = s;
            while b[k] == b'#' {
                k += 1;
            }
            let hashes = k - s;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[k + 1..]
                .find(&close)
                .map_or(b.len(), |n| k + 1 + n + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}', '{') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let end = src[i + 2..].find('\'').map_or(b.len(), |n| i + 2 + n + 1);
                blank(&mut out, i, end);
                i = end;
            } else if b.get(i + 2) == Some(&b'\'') {
                blank(&mut out, i, i + 3);
                i += 3;
            } else {
                // Multi-byte char literal or a lifetime.
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1 + ch_len) == Some(&b'\'') {
                    blank(&mut out, i, i + 2 + ch_len);
                    i += 2 + ch_len;
                } else {
                    i += 1;
                }
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte ranges of inline `mod name { .. }` blocks, with their names.
fn inline_mods(code: &str) -> Vec<(usize, usize, String)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(n) = code[i..].find("mod ") {
        let at = i + n;
        i = at + 4;
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        let name_start = i;
        let mut j = i;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        let name = code[name_start..j].to_string();
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if name.is_empty() || b.get(j) != Some(&b'{') {
            continue;
        }
        let mut depth = 0;
        let mut k = j;
        while k < b.len() {
            match b[k] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        found.push((j, k, name));
    }
    found
}

/// Declared child modules (`mod x;` or `mod x {`), whose names relative paths may start with.
fn child_mods(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let t = line.trim_start();
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Expands a use tree (`a::{b, c::{d, e as f}}`) into full paths, each with the name it binds.
fn expand_use(tree: &str) -> Vec<(Vec<String>, String)> {
    fn split_top(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    fn go(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, String)>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim().trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut p = prefix.to_vec();
            p.extend(
                head.split("::")
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().to_string()),
            );
            for part in split_top(inner) {
                go(&p, part, out);
            }
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
            None => (tree, None),
        };
        let mut p = prefix.to_vec();
        p.extend(path.split("::").map(|s| s.trim().to_string()));
        if p.last().is_some_and(|l| l == "self") {
            p.pop();
        }
        let bound = alias.unwrap_or_else(|| p.last().cloned().unwrap_or_default());
        out.push((p, bound));
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

struct Graph {
    files: Vec<SourceFile>,
    by_module: BTreeMap<Vec<String>, usize>,
    /// Per file: name re-exported with `pub use` -> the full path it stands for.
    reexports: Vec<BTreeMap<String, Vec<String>>>,
}

impl Graph {
    fn load() -> Graph {
        let root = src_dir();
        let mut paths = Vec::new();
        collect(&root, &mut paths);
        let mut sources = Vec::new();
        for path in paths {
            let rel = path.strip_prefix(&root).expect("under src").to_path_buf();
            if rel == Path::new("main.rs") {
                continue; // the binary, a separate crate
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            sources.push((rel, text));
        }
        Graph::from_sources(sources)
    }

    /// The graph of these files (paths relative to `src/`, with their text).
    fn from_sources(sources: Vec<(PathBuf, String)>) -> Graph {
        let files: Vec<SourceFile> = sources
            .into_iter()
            .map(|(rel, text)| SourceFile {
                rel: format!("src/{}", rel.display()),
                module: module_of(&rel),
                code: strip(&text),
            })
            .collect();
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut graph = Graph {
            files,
            by_module,
            reexports: Vec::new(),
        };
        graph.reexports = (0..graph.files.len())
            .map(|i| {
                let mut map = BTreeMap::new();
                for (stmt, at, public) in use_statements(&graph.files[i].code) {
                    if !public {
                        continue;
                    }
                    for (path, bound) in expand_use(&stmt) {
                        if let Some(abs) = graph.absolute(i, at, &path) {
                            map.insert(bound, abs);
                        }
                    }
                }
                map
            })
            .collect();
        graph
    }

    /// The module path a path written at byte `at` of file `i` stands for, or None for paths
    /// outside the crate (std, other crates).
    fn absolute(&self, i: usize, at: usize, path: &[String]) -> Option<Vec<String>> {
        let file = &self.files[i];
        let mut here = file.module.clone();
        for (start, end, name) in inline_mods(&file.code) {
            if start < at && at < end {
                here.push(name);
            }
        }
        let first = path.first()?;
        let mut rest = &path[1..];
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => {
                let mut b = here.clone();
                b.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    b.pop();
                    rest = &rest[1..];
                }
                b
            }
            name if child_mods(&file.code).contains(name) => {
                let mut b = file.module.clone();
                b.push(name.to_string());
                b
            }
            _ => return None,
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The files an import of `abs` runs through: the deepest module file on the path, then,
    /// while that file re-exports the next name with `pub use`, the file it points to, and so
    /// on to the one that defines it. Each is an edge: a name reached through a re-export ties
    /// the importer to the re-exporting file too (four files of `agent/transfer/` reached
    /// `FetchError` through `fetch.rs`'s re-export and hid a circle with it, issue 26).
    fn resolve(&self, abs: &[String], hops: usize) -> Vec<usize> {
        let Some((i, len)) = (0..=abs.len())
            .rev()
            .find_map(|len| self.by_module.get(&abs[..len]).map(|&i| (i, len)))
        else {
            return Vec::new();
        };
        let mut through = vec![i];
        if hops < 8 {
            if let Some(next) = abs.get(len) {
                if let Some(target) = self.reexports[i].get(next) {
                    let mut t = target.clone();
                    t.extend(abs[len + 1..].iter().cloned());
                    if t != abs {
                        through.extend(self.resolve(&t, hops + 1));
                    }
                }
            }
        }
        through
    }

    /// Whether an edge from file `i` to file `j` counts. A file reaching up to its own parent
    /// module is not an edge (the parent is the facade its children share), except the crate
    /// root for files outside `cmd/`: `lib.rs` imports the commands, so a layer that reaches a
    /// name through it points back up at them.
    fn counts(&self, i: usize, j: usize) -> bool {
        let (from, to) = (&self.files[i], &self.files[j]);
        if i == j {
            return false;
        }
        if to.module.is_empty() {
            return !from.rel.starts_with("src/cmd/");
        }
        !from.module.starts_with(&to.module)
    }

    /// File-level edges: file -> files it names, each with one example path.
    fn edges(&self) -> Vec<BTreeMap<usize, String>> {
        (0..self.files.len())
            .map(|i| {
                let code = &self.files[i].code;
                let mut out: BTreeMap<usize, String> = BTreeMap::new();
                let mut add = |graph: &Graph, at: usize, path: Vec<String>| {
                    if let Some(abs) = graph.absolute(i, at, &path) {
                        for j in graph.resolve(&abs, 0) {
                            if graph.counts(i, j) {
                                out.entry(j).or_insert_with(|| path.join("::"));
                            }
                        }
                    }
                };
                // Names bound by `use` to modules, so `fetch::x` after `use super::fetch;` counts.
                let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (stmt, at, _) in use_statements(code) {
                    for (path, bound) in expand_use(&stmt) {
                        if let Some(abs) = self.absolute(i, at, &path) {
                            aliases.insert(bound, abs);
                        }
                        add(self, at, path);
                    }
                }
                for (at, path) in inline_paths(code) {
                    if let Some(target) = aliases.get(&path[0]) {
                        let mut full = vec!["crate".to_string()];
                        full.extend(target.iter().cloned());
                        full.extend(path[1..].iter().cloned());
                        add(self, at, full);
                    } else {
                        add(self, at, path);
                    }
                }
                out
            })
            .collect()
    }
}

/// `use` statements (the tree after `use`, up to `;`), with their offset and whether `pub`.
fn use_statements(code: &str) -> Vec<(String, usize, bool)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(n) = code[i..].find("use ") {
        let at = i + n;
        i = at + 4;
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        let Some(end) = code[i..].find(';') else {
            break;
        };
        let before = code[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')');
        out.push((
            code[i..i + end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            at,
            public,
        ));
        i += end;
    }
    out
}

/// Paths in code outside `use`: `a::b::c` chains of identifiers.
fn inline_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) && (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':')) {
            let start = i;
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                if s == j {
                    break;
                }
                segs.push(code[s..j].to_string());
                if code[j..].starts_with("::") && b.get(j + 2).is_some_and(|c| is_ident(*c)) {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push((start, segs));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Strongly connected components with more than one file (Tarjan), each as its file indices.
fn components(edges: &[BTreeMap<usize, String>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeMap<usize, String>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let succ: Vec<usize> = s.edges[v].keys().copied().collect();
        for w in succ {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// One shortest circle through the first file of each component, plus the component's size and
/// every edge inside it, so the report names what to cut.
fn cycles(graph: &Graph, edges: &[BTreeMap<usize, String>]) -> Vec<String> {
    let mut reports = Vec::new();
    for comp in components(edges) {
        let inside: BTreeSet<usize> = comp.iter().copied().collect();
        let start = comp[0];
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for &next in edges[at].keys().filter(|n| inside.contains(n)) {
                if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(next) {
                    e.insert(at);
                    queue.push_back(next);
                }
            }
            if prev.contains_key(&start) {
                break;
            }
        }
        let mut path = vec![start];
        let mut at = prev[&start];
        while at != start {
            path.push(at);
            at = prev[&at];
        }
        path.push(start);
        path.reverse();
        let circle: Vec<String> = path
            .windows(2)
            .map(|w| format!("{} ({})", graph.files[w[0]].rel, edges[w[0]][&w[1]]))
            .chain(std::iter::once(graph.files[start].rel.clone()))
            .collect();
        let mut all = Vec::new();
        for &a in &comp {
            for (b, example) in edges[a].iter().filter(|(b, _)| inside.contains(b)) {
                all.push(format!(
                    "      {} -> {} ({example})",
                    graph.files[a].rel, graph.files[*b].rel
                ));
            }
        }
        reports.push(format!(
            "{}\n    ({} files tied together; edges among them:)\n{}",
            circle.join("\n    -> "),
            comp.len(),
            all.join("\n")
        ));
    }
    reports
}

#[test]
fn no_import_circle_between_files_of_src() {
    let graph = Graph::load();
    let edges = graph.edges();
    let found = cycles(&graph, &edges);
    assert!(
        found.is_empty(),
        "{} import circle(s) between files of src/:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

/// The circle check on planted trees: the checker must see a circle that runs through a `pub
/// use` (the shape `FetchError` had: siblings reaching a shared error through `fetch.rs`'s
/// re-export while `fetch.rs` imports them), and one through the crate root (a layer naming
/// `crate::Result` while `lib.rs` imports the commands that import the layer); and must not
/// call the honest shapes circles.
#[test]
fn the_circle_check_sees_through_pub_use_and_lib_rs() {
    let tree = |files: &[(&str, &str)]| {
        let graph = Graph::from_sources(
            files
                .iter()
                .map(|(rel, text)| (PathBuf::from(rel), text.to_string()))
                .collect(),
        );
        cycles(&graph, &graph.edges())
    };
    let through_reexport = [
        ("lib.rs", "pub mod t;\n"),
        ("t/mod.rs", "pub mod fetch;\npub mod relay;\n"),
        (
            "t/fetch.rs",
            "mod error;\npub use error::FetchError;\nuse super::relay::Relay;\n",
        ),
        ("t/fetch/error.rs", "pub enum FetchError {}\n"),
        (
            "t/relay.rs",
            "use super::fetch::FetchError;\npub struct Relay;\n",
        ),
    ];
    let found = tree(&through_reexport);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/t/relay.rs") && found[0].contains("src/t/fetch.rs"));
    // The error reached directly: no circle.
    let mut direct = through_reexport;
    direct[2] = (
        "t/fetch.rs",
        "use super::fetch_error::FetchError;\nuse super::relay::Relay;\n",
    );
    direct[3] = ("t/fetch_error.rs", "pub enum FetchError {}\n");
    direct[4] = (
        "t/relay.rs",
        "use super::fetch_error::FetchError;\npub struct Relay;\n",
    );
    direct[1] = (
        "t/mod.rs",
        "pub mod fetch;\npub mod fetch_error;\npub mod relay;\n",
    );
    assert_eq!(tree(&direct), Vec::<String>::new());

    let through_root = [
        ("lib.rs", "pub mod agent;\npub mod cmd;\npub mod error;\npub use error::Result;\nfn run() { cmd::main(); }\n"),
        ("error.rs", "pub type Result<T> = std::result::Result<T, ()>;\n"),
        ("cmd/mod.rs", "use crate::agent::work;\npub fn main() { work(); }\n"),
        ("agent.rs", "use crate::Result;\npub fn work() -> Result<()> { Ok(()) }\n"),
    ];
    let found = tree(&through_root);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/agent.rs") && found[0].contains("src/lib.rs"));
    let mut direct = through_root;
    direct[3] = (
        "agent.rs",
        "use crate::error::Result;\npub fn work() -> Result<()> { Ok(()) }\n",
    );
    assert_eq!(tree(&direct), Vec::<String>::new());
}

/// A command file: one in `src/cmd/` other than the dispatcher that defines a command (its
/// `run`). `cmd/help.rs` holds the dispatcher's help text and is not one.
fn is_command_file(file: &SourceFile) -> bool {
    file.rel.starts_with("src/cmd/")
        && file.rel != "src/cmd/mod.rs"
        && file.code.contains("fn run(")
}

#[test]
fn every_cmd_file_is_imported_only_by_the_dispatcher() {
    let graph = Graph::load();
    let edges = graph.edges();
    let mut wrong = Vec::new();
    for (i, out) in edges.iter().enumerate() {
        let from = &graph.files[i].rel;
        for (&j, example) in out {
            if is_command_file(&graph.files[j]) && from != "src/cmd/mod.rs" {
                wrong.push(format!("{from} imports {} ({example})", graph.files[j].rel));
            }
        }
    }
    // Integration tests and benches use the library, not a command's file.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut outside = Vec::new();
    collect(&root.join("tests"), &mut outside);
    collect(&root.join("benches"), &mut outside);
    for path in outside {
        let code = strip(&std::fs::read_to_string(&path).expect("read"));
        for (_, segs) in inline_paths(&code) {
            if segs.len() > 3 && segs[0] == "p2pu" && segs[1] == "cmd" {
                let file = format!("src/cmd/{}.rs", segs[2]);
                if graph
                    .files
                    .iter()
                    .any(|f| f.rel == file && is_command_file(f))
                {
                    wrong.push(format!(
                        "{} imports {file} ({})",
                        path.display(),
                        segs.join("::")
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "command files used as a library:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_checker_reads_use_trees_and_finds_the_edges() {
    // Guards the checker itself: a reader that found no edges would pass both tests above.
    let graph = Graph::load();
    let edges = graph.edges();
    let count: usize = edges.iter().map(BTreeMap::len).sum();
    assert!(
        count > 100,
        "only {count} edges found; the reader is broken"
    );
    let a = strip("use crate::x::{y, z::{self, w as v}};\n// crate::q\nlet s = \"crate::r\";");
    let uses = use_statements(&a);
    assert_eq!(uses.len(), 1);
    let paths: Vec<String> = expand_use(&uses[0].0)
        .into_iter()
        .map(|(p, b)| format!("{}={b}", p.join("::")))
        .collect();
    assert_eq!(
        paths,
        ["crate::x::y=y", "crate::x::z=z", "crate::x::z::w=v"]
    );
    assert!(!a.contains("crate::q") && !a.contains("crate::r"));
}

#[test]
fn the_config_flag_is_declared_once() {
    // Every command takes `--config` through `cmd::ConfigArg`; a second declaration could drift
    // in its variable or default.
    let root = src_dir();
    let mut paths = Vec::new();
    collect(&root, &mut paths);
    let declared: Vec<String> = paths
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .expect("read source")
                .contains("env = \"P2PU_CONFIG\"")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(declared, [root.join("cmd/mod.rs").display().to_string()]);
}

#[test]
fn the_error_everyone_imports_imports_nothing_from_the_crate() {
    // Each layer joins `Error` through `LayerError` beside its own error type; an import here
    // would tie every layer that returns `Error` to the one imported.
    let graph = Graph::load();
    let edges = graph.edges();
    let at = graph
        .files
        .iter()
        .position(|f| f.rel == "src/error.rs")
        .expect("src/error.rs");
    let names: Vec<String> = edges[at]
        .iter()
        .map(|(j, example)| format!("{} ({example})", graph.files[*j].rel))
        .collect();
    assert!(names.is_empty(), "src/error.rs imports {names:?}");
}

/// `code` with every `#[cfg(test)] mod .. { .. }` block blanked: tests may open what they like.
fn without_test_mods(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(test)]").map(|i| i + from) {
        let rest = out[at + "#[cfg(test)]".len()..].trim_start();
        from = at + 1;
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|vis| rest.strip_prefix(vis))
            .unwrap_or(rest);
        if !rest.starts_with("mod ") {
            continue;
        }
        let Some(open) = out[at..].find('{').map(|i| i + at) else {
            break;
        };
        // `#[cfg(test)] mod tests;` lives in its own file: the next block is real code.
        if out[at..open].contains(';') {
            continue;
        }
        let mut depth = 0;
        let mut end = out.len();
        for (i, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, &" ".repeat(end - at));
    }
    out
}

/// The files of `src/` that open files themselves, each with why every path it opens is not
/// one another user can write (or, for the owners, how it reads those). Everything else reads
/// through `untrusted` (issue 28: a plain open of `<info-hash>.plan` in the download dir
/// followed links and blocked the root agent's main thread on a FIFO; the snapshot document's
/// `fs::read` had no bound).
const FILE_OPENERS: &[(&str, &str)] = &[
    ("src/untrusted.rs", "the owner: the one reader of what another user can write"),
    ("src/spool.rs", "opens through untrusted::open_any and types its own refusals (quarantine)"),
    ("src/agent/apply/kind.rs", "the operator's own tree at submit, and the verified copy in the state dir"),
    ("src/fsutil.rs", "durable writes: opens directories to sync them and creates files on a directory descriptor"),
    ("src/config.rs", "the site config, root's"),
    ("src/keys.rs", "key files and the trusted keys dir, root's"),
    ("src/trust.rs", "the trusted keys dir, root's"),
    ("src/provision.rs", "/etc files provisioning edits, root's"),
    ("src/provision/owner.rs", "/etc/passwd and /etc/group"),
    ("src/provision/secrets.rs", "secrets provisioning wrote, root's"),
    ("src/render.rs", "the operator's templates"),
    ("src/engines/clients.rs", "engine secrets in /etc/p2pu, root's"),
    ("src/engines/warm_validator.rs", "the head of Puppet's own launcher under /usr, root's"),
    ("src/nat/mod.rs", "the overlay secret in /etc/p2pu"),
    ("src/nat/names.rs", "the NAT proxy's own bindings file, in its own state dir"),
    ("src/agent/runtime/state.rs", "the state dir, root's (0700/0600)"),
    (
        "src/agent/runtime/clock.rs",
        "the clock's offset in the state dir, root's (0600)",
    ),
    (
        "src/agent/runtime/sync.rs",
        "the answers to `p2pu sync` in the state dir, root's (0700/0600)",
    ),
    ("src/agent/apply/extract.rs", "the verified copy in the state dir, and the target it builds"),
    ("src/agent/apply/good.rs", "the kept payloads in the state dir"),
    ("src/agent/apply/mod.rs", "the verified copy in the state dir"),
    ("src/agent/transfer/fetch.rs", "sha256_file: the operator's own payload at submit"),
    ("src/formats/torrent.rs", "torrent::read: a .torrent the operator names"),
    ("src/formats/torrent/hashing.rs", "hashing the operator's payload at submit"),
    ("src/cmd/event.rs", "event sendfile: the operator's file"),
    ("src/cmd/init.rs", "init: the operator's files and /etc"),
    ("src/cmd/lab.rs", "p2pu lab: the example manifest in the lab's own directory"),
    ("src/config/tests.rs", "config's tests, a test module in a file of its own"),
    ("src/dashboard/tests.rs", "the dashboard's tests, a test module in a file of its own"),
    ("src/cmd/key.rs", "key files the operator names"),
    ("src/dashboard/mod.rs", "fleet serve --token-file: the token file the operator names"),
    ("src/cmd/submit.rs", "the operator's files"),
    (
        "src/publish.rs",
        "submit: the operator's own payload (its copy in the download dir is written on descriptors)",
    ),
    ("src/lab/netns.rs", "the lab harness: /proc and its own namespaces"),
    ("src/lab/node.rs", "the lab harness: its own nodes' files"),
    ("src/lab/process.rs", "the lab harness: /proc"),
    ("src/lab/startup.rs", "the lab harness: its own nodes' files"),
];

/// Functions that open a file by its path: to read it, and to write or copy through it (as
/// root in a directory another user writes, a write follows the link planted there). Matched
/// as whole names, so a call, a turbofish (`fs::read::<&Path>(`) and the function passed as a
/// value (`.map(fs::read_to_string)`) all count, and `fs::read_dir` does not.
const OPENS: &[&str] = &[
    "File::open",
    "File::create",
    "File::create_new",
    "fs::read",
    "fs::read_to_string",
    "fs::write",
    "fs::copy",
    "OpenOptions::new",
    "File::options",
    "untrusted::open_any",
];

/// Prefixes of whole families: `open`, `openat`, `openat2`, raw or through nix; all of
/// `tokio::fs`.
const OPEN_PREFIXES: &[&str] = &["fcntl::open", "libc::open", "tokio::fs::"];

/// Where `name` occurs in `code` as a whole path: not followed by more of an identifier.
fn names(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        code.as_bytes()
            .get(at + name.len())
            .is_none_or(|&c| !is_ident(c))
    })
}

/// The functions of `std::fs` that open a path, as a bare import would bring them in.
const FS_OPENING_FNS: &[&str] = &["read", "read_to_string", "write", "copy"];

/// The first way `code` (stripped, test modules blanked) opens a file by its path, if any: one
/// of [`OPENS`], or a `use` of `fs` that brings an opener in under a name the search above
/// cannot see (bare, `use std::fs::read_to_string;`, or renamed, `use std::fs as disk;`).
fn opener_in(code: &str) -> Option<String> {
    if let Some(open) = OPENS.iter().find(|o| names(code, o)) {
        return Some(open.to_string());
    }
    if let Some(open) = OPEN_PREFIXES.iter().find(|o| code.contains(*o)) {
        return Some(open.to_string());
    }
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let starts_item = at == 0 || !is_ident(rest.as_bytes()[at - 1]);
        let end = rest[at..].find(';').map_or(rest.len(), |n| at + n);
        let statement = &rest[at..end];
        rest = &rest[end.min(rest.len())..];
        if !starts_item {
            continue;
        }
        let tokens: Vec<&str> = statement
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| !t.is_empty())
            .collect();
        if !tokens.contains(&"fs") {
            continue;
        }
        let renamed = statement.contains(" as ") && !statement.contains(" as _");
        let bare = tokens.iter().any(|t| FS_OPENING_FNS.contains(t));
        if renamed || bare {
            return Some(statement.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    None
}

#[test]
fn only_the_owners_open_files() {
    let root = src_dir();
    let mut paths = Vec::new();
    collect(&root, &mut paths);
    let allowed: BTreeMap<&str, &str> = FILE_OPENERS.iter().copied().collect();
    let mut opening = BTreeSet::new();
    let mut unlisted = Vec::new();
    for path in paths {
        let rel = format!(
            "src/{}",
            path.strip_prefix(&root).expect("under src").display()
        );
        let code = without_test_mods(&strip(&std::fs::read_to_string(&path).expect("source")));
        let Some(open) = opener_in(&code) else {
            continue;
        };
        opening.insert(rel.clone());
        if !allowed.contains_key(rel.as_str()) {
            unlisted.push(format!("{rel} ({open})"));
        }
    }
    assert!(
        unlisted.is_empty(),
        "these files open files themselves: read what another user can write (the download \
         dir, the seed root, the spool's overlay) through crate::untrusted, or add the file to \
         FILE_OPENERS with why its paths are root's: {unlisted:?}"
    );
    let stale: Vec<&str> = allowed
        .keys()
        .filter(|rel| !opening.contains(**rel))
        .copied()
        .collect();
    assert!(
        stale.is_empty(),
        "FILE_OPENERS lists files that open nothing: {stale:?}"
    );
}

/// What the pure formats crate must not name outside its tests: the filesystem, sockets, a
/// process, an async runtime, or p2pu itself. Its parsers then cannot reach the machine, it
/// builds and tests in seconds, and the fuzz targets link it alone (issue 26).
const IMPURE: &[&str] = &[
    "std::fs",
    "fs::",
    "File::",
    "OpenOptions",
    "std::os",
    "std::process",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "tokio",
    "quinn",
    "nix::",
    "libc::",
    "p2pu::",
];

/// The first impure name `code` (stripped, test modules blanked) uses, if any.
fn impure_in(code: &str) -> Option<&'static str> {
    IMPURE.iter().copied().find(|name| {
        code.match_indices(name)
            .any(|(at, _)| at == 0 || !is_ident(code.as_bytes()[at - 1]))
    })
}

#[test]
fn the_formats_crate_touches_no_file_and_no_network() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/p2pu-formats/src");
    let mut paths = Vec::new();
    collect(&root, &mut paths);
    assert!(
        paths.len() > 10,
        "only {} files in {}",
        paths.len(),
        root.display()
    );
    let impure: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let code = without_test_mods(&strip(&std::fs::read_to_string(path).expect("source")));
            impure_in(&code).map(|name| format!("{} ({name})", path.display()))
        })
        .collect();
    assert!(
        impure.is_empty(),
        "the formats crate is pure (no files, no network); move the I/O to p2pu: {impure:?}"
    );
    // The check itself: each of these is caught, and a test module or a comment is not.
    for bad in [
        "let b = std::fs::read(p);",
        "use std::net::UdpSocket;",
        "tokio::spawn(f);",
    ] {
        assert!(impure_in(&strip(bad)).is_some(), "{bad}");
    }
    let fine = "// std::fs::read\n#[cfg(test)]\nmod tests {\n    fn t() { std::fs::read(p); }\n}\n";
    assert_eq!(impure_in(&without_test_mods(&strip(fine))), None);
}

#[test]
fn the_opener_check_sees_code_and_not_tests_or_comments() {
    let src = "// File::open(\nfn a() { let s = \"fs::read(\"; }\n#[cfg(test)]\nmod tests {\n    fn t() { std::fs::read(p); }\n}\nfn b() { std::fs::File::open(p); }\n";
    let code = without_test_mods(&strip(src));
    assert!(!code.contains("fs::read("));
    assert!(code.contains("File::open("));
    assert_eq!(code.matches("File::open(").count(), 1);
}

/// A hostile review of the lint above: each of these opens (or writes through) a path in a
/// file nobody listed, and each was missed. Writes count: `fs::write` or `File::create` in the
/// download dir follows a link Transmission's user planted there, as root. An opener imported
/// by another name or bare (`use std::fs::read_to_string;`) hides from a search for
/// `fs::read_to_string(`; an out-of-line `#[cfg(test)] mod tests;` used to blank the next block
/// of real code as if it were the test module.
#[test]
fn the_opener_check_sees_writes_raw_opens_and_openers_under_other_names() {
    let opening = [
        "fn a(p: &Path) { let _ = std::fs::File::create(p); }",
        "fn a(p: &Path) { let _ = File::create_new(p); }",
        "fn a(p: &Path) { let _ = std::fs::write(p, b\"x\"); }",
        "fn a(p: &Path, q: &Path) { let _ = std::fs::copy(p, q); }",
        "fn a(p: &Path) { let _ = nix::fcntl::openat2(None, p, how); }",
        "fn a() { unsafe { libc::open(p.as_ptr(), 0) }; }",
        "use std::fs::read_to_string;\nfn a(p: &Path) { let _ = read_to_string(p); }",
        "use std::fs::{self, read};\nfn a(p: &Path) { let _ = read(p); }",
        "use std::fs::{write as put};\nfn a(p: &Path) { let _ = put(p, b\"\"); }",
        "use std::fs as disk;\nfn a(p: &Path) { let _ = disk::read(p); }",
        "use std::fs::File as F;\nfn a(p: &Path) { let _ = F::open(p); }",
        "#[cfg(test)]\nmod tests;\n\nfn a(p: &Path) { let _ = std::fs::read(p); }",
        "fn a(p: &Path) { let _ = std::fs::read::<&Path>(p); }",
        "fn a(ps: &[PathBuf]) { let _: Vec<_> = ps.iter().map(std::fs::read_to_string).collect(); }",
        "fn a(p: &Path) { let _ = std::fs::File::open::<&Path>(p); }",
    ];
    for src in opening {
        let code = without_test_mods(&strip(src));
        assert!(opener_in(&code).is_some(), "missed: {src}");
    }
    let not_opening = [
        "use std::fs::{self, File, DirBuilder};\nfn a(f: OwnedFd) -> File { File::from(f) }",
        "fn a(p: &Path) { let _ = std::fs::read_dir(p); let _ = std::fs::remove_file(p); }",
        "fn a(p: &Path) { let _ = std::fs::read_link(p); let _ = File::open_dir_helper; }",
        "#[cfg(test)]\npub(crate) mod testing {\n    fn t() { std::fs::write(p, b\"\"); }\n}\n",
    ];
    for src in not_opening {
        let code = without_test_mods(&strip(src));
        assert_eq!(opener_in(&code), None, "{src}");
    }
}

/// Issue 28: an unverified announcement (one waiting for its rollout plan) was stored as a
/// record, and replaced the genuine record of the same name and seq. New records come from the
/// intake's decisions only (accepted, held, or sent back by a verified control statement);
/// everything else changes records that exist (`set_status`, `update`).
#[test]
fn records_are_written_only_by_the_intake() {
    let root = src_dir();
    let mut paths = Vec::new();
    collect(&root, &mut paths);
    let allowed = ["src/agent/runtime/intake.rs", "src/agent/runtime/state.rs"];
    let mut writers = Vec::new();
    for path in paths {
        let rel = format!(
            "src/{}",
            path.strip_prefix(&root).expect("under src").display()
        );
        let code = without_test_mods(&strip(&std::fs::read_to_string(&path).expect("source")));
        if stores_records(&code) && !allowed.contains(&rel.as_str()) {
            writers.push(rel);
        }
    }
    assert!(
        writers.is_empty(),
        "these files store records themselves; new records come from the intake's verified \
         decisions: {writers:?}"
    );
}

/// Whether `code` stores a record: `store.put(..)`, or the same called as a path
/// (`StateStore::put(&store, ..)`), which a search for `.put(` misses. `StateStore::update`
/// cannot make one: it refuses a change to what the intake verified
/// (`src/agent/runtime/state.rs::update_changes_what_the_workers_keep_never_what_was_verified`).
fn stores_records(code: &str) -> bool {
    code.contains(".put(") || names(code, "StateStore::put")
}

#[test]
fn the_record_check_sees_put_called_as_a_path() {
    for src in [
        "fn a(s: &StateStore, r: Record) { s.put(r).ok(); }",
        "fn a(s: &StateStore, r: Record) { StateStore::put(s, r).ok(); }",
        "fn a(s: &StateStore, rs: Vec<Record>) { rs.into_iter().try_for_each(|r| s.put(r)).ok(); }",
        "fn a(s: &StateStore, rs: Vec<Record>) { let f = StateStore::put; }",
    ] {
        assert!(stores_records(&strip(src)), "missed: {src}");
    }
    assert!(!stores_records(&strip(
        "fn a(d: &Path) { spool::put(d, Source::Sync, b\"x\").ok(); }"
    )));
}
