//! The teaching docs point into the code; these tests keep them pointing at the right place.
//!
//! - Docs point at code by file and item, never by line number: a link from
//!   `docs/TUTORIAL.md` or `docs/ARCHITECTURE.md` to `../src/FILE.rs` whose text names an
//!   item (`fn_name`, `Type::fn_name`, `module::fn_name`, a constant, a field or a variant)
//!   must land on a file that declares that item. A refactor that renames or moves code
//!   fails here instead of silently rotting the docs.
//! - Other relative links (files, headings) must resolve.
//! - The mermaid `stateDiagram-v2` in `docs/ARCHITECTURE.md` must use exactly the variants
//!   of `conn::State`, and its arrows must be exactly the transitions the state machine
//!   makes (observed through its trace log while exploring every short input sequence).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use echod::config::{Mode, Telnet};
use echod::protocol::conn::{Connection, Rules, State};
use echod::protocol::tick::Tick;

/// The documents whose links we check.
const DOCS: [&str; 2] = ["docs/TUTORIAL.md", "docs/ARCHITECTURE.md"];

/// The document with the state diagram.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A markdown link `[text](target)` and where it was found.
#[derive(Debug)]
struct Link {
    /// 1-based line in the document.
    line: usize,
    text: String,
    target: String,
}

/// Every inline link outside fenced code blocks.
fn links(markdown: &str) -> Vec<Link> {
    let mut found = Vec::new();
    let mut in_code = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        let mut offset = 0;
        while let Some(at) = rest.find("](") {
            let before = &line[..offset + at];
            let after = &rest[at + 2..];
            if let (Some(open), Some(close)) = (before.rfind('['), after.find(')')) {
                found.push(Link {
                    line: i + 1,
                    text: before[open + 1..].to_string(),
                    target: after[..close].to_string(),
                });
            }
            offset += at + 2;
            rest = &line[offset..];
        }
    }
    found
}

/// Is `c` part of a Rust identifier?
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) && s.chars().all(is_ident_char)
}

/// Does `s` start with the whole word `word`?
fn starts_with_word(s: &str, word: &str) -> bool {
    s.strip_prefix(word)
        .is_some_and(|rest| !rest.starts_with(is_ident_char))
}

fn strip_visibility(s: &str) -> &str {
    ["pub(crate) ", "pub(super) ", "pub "]
        .iter()
        .find_map(|v| s.strip_prefix(v))
        .unwrap_or(s)
}

/// A line that opens a top-level item (at column 0): `impl`, `struct`, `fn`, …
fn is_item_header(line: &str) -> bool {
    if line.starts_with(char::is_whitespace) {
        return false;
    }
    let t = strip_visibility(line);
    [
        "impl",
        "unsafe impl",
        "struct",
        "enum",
        "trait",
        "mod",
        "fn",
        "const",
        "static",
        "type",
    ]
    .iter()
    .any(|kw| t.starts_with(&format!("{kw} ")) || t.starts_with(&format!("{kw}<")))
}

/// The top-level item that line `index` (0-based) belongs to: its header line.
fn enclosing_item<'a>(lines: &[&'a str], index: usize) -> &'a str {
    (0..=index)
        .rev()
        .map(|j| lines[j])
        .find(|l| is_item_header(l))
        .unwrap_or("")
}

/// Does `line` declare `name`? Items anywhere; fields and variants only inside a struct
/// or enum (`header` is the enclosing top-level item).
fn declares(line: &str, name: &str, header: &str) -> bool {
    let t = strip_visibility(line.trim());
    let item = [
        "fn ",
        "const fn ",
        "unsafe fn ",
        "const ",
        "static ",
        "struct ",
        "enum ",
        "trait ",
        "type ",
        "mod ",
    ]
    .iter()
    .any(|kw| {
        t.strip_prefix(kw)
            .is_some_and(|rest| starts_with_word(rest, name))
    });
    if item {
        return true;
    }
    let h = strip_visibility(header);
    let in_type = h.starts_with("struct ") || h.starts_with("enum ");
    in_type
        && line.starts_with(char::is_whitespace)
        && starts_with_word(t, name)
        && t[name.len()..]
            .trim_start()
            .chars()
            .next()
            .is_none_or(|c| matches!(c, ':' | ',' | '(' | '{'))
}

/// The names a file can be qualified with: `net` for `src/net.rs`, `load` for
/// `src/client/load/mod.rs`.
fn module_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem == "mod" {
        let parent = path.parent().and_then(|p| p.file_name());
        parent.and_then(|s| s.to_str()).unwrap_or("").to_string()
    } else {
        stem.to_string()
    }
}

/// Checks that line `line_no` of `src/FILE` declares the item `text` names; returns why
/// not, if it does not.
fn check_code_link(file: &str, line_no: usize, text: &str) -> Result<(), String> {
    let path = root().join("src").join(file);
    let source = std::fs::read_to_string(&path).map_err(|e| format!("src/{file}: {e}"))?;
    let lines: Vec<&str> = source.lines().collect();
    check_code_line(file, &lines, line_no, text)
}

/// [`check_code_link`] on the lines of `src/FILE`, already read.
fn check_code_line(file: &str, lines: &[&str], line_no: usize, text: &str) -> Result<(), String> {
    let item = text.trim_matches('`').trim_end_matches("()");
    let parts: Vec<&str> = item.split("::").collect();
    if !parts.iter().all(|p| is_ident(p)) {
        return Err(format!(
            "link text {text:?} does not name an item (write `fn_name` or `Type::fn_name`)"
        ));
    }
    let name = parts[parts.len() - 1];
    let qualifier = (parts.len() > 1).then(|| parts[parts.len() - 2]);
    let path = root().join("src").join(file);
    let Some(line) = line_no.checked_sub(1).and_then(|i| lines.get(i)) else {
        return Err(format!("src/{file} has no line {line_no}"));
    };
    let header = enclosing_item(lines, line_no - 1);
    if !declares(line, name, header) {
        return Err(format!(
            "src/{file}:{line_no} does not declare `{name}`; it reads {:?}",
            line.trim()
        ));
    }
    let top_level = is_item_header(line);
    match qualifier {
        Some(q) if q == module_name(&path) => {
            if !top_level {
                return Err(format!(
                    "`{item}`: src/{file}:{line_no} is inside `{}`, not a top-level item",
                    header.trim_end_matches(" {")
                ));
            }
        }
        Some(q) => {
            let words: Vec<&str> = header.split(|c: char| !is_ident_char(c)).collect();
            if top_level || !words.contains(&q) {
                return Err(format!(
                    "`{item}`: src/{file}:{line_no} is not inside `{q}` (it is in {:?})",
                    header.trim_end_matches(" {")
                ));
            }
        }
        None => {
            if !top_level {
                return Err(format!(
                    "`{item}`: src/{file}:{line_no} is inside {:?}; write `Type::{name}`",
                    header.trim_end_matches(" {")
                ));
            }
        }
    }
    Ok(())
}

/// The lines of `src/FILE` that declare the item `text` names.
fn lines_declaring(file: &str, text: &str) -> Vec<usize> {
    let source = std::fs::read_to_string(root().join("src").join(file)).unwrap_or_default();
    let lines: Vec<&str> = source.lines().collect();
    let name = text
        .trim_matches('`')
        .trim_end_matches("()")
        .rsplit("::")
        .next()
        .unwrap_or("");
    (1..=lines.len())
        .filter(|&n| lines[n - 1].contains(name))
        .filter(|&n| check_code_line(file, &lines, n, text).is_ok())
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading in `markdown`.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

/// Does `text` (a link's text) name an item, rather than a file or a phrase?
fn names_an_item(text: &str) -> bool {
    let item = text.trim_matches('`').trim_end_matches("()");
    text.starts_with('`') && item.split("::").all(is_ident)
}

/// Every link to `../src/FILE.rs` whose text names an item lands on a file declaring
/// that item, and no link into the code carries a line number.
#[test]
fn code_links_land_on_a_file_declaring_the_item_they_name() {
    let mut errors = String::new();
    let mut checked = 0;
    for doc in DOCS {
        for link in links(&read(doc)) {
            let Some(target) = link.target.strip_prefix("../src/") else {
                continue;
            };
            if let Some((_, anchor)) = target.split_once('#') {
                let _ = writeln!(
                    errors,
                    "{doc}:{}: [{}]({}): point at code by file and item, not #{anchor}",
                    link.line, link.text, link.target
                );
                continue;
            }
            if !names_an_item(&link.text) {
                continue; // A whole file: checked with the other relative links.
            }
            checked += 1;
            if lines_declaring(target, &link.text).is_empty() {
                let why = check_code_link(target, 1, &link.text)
                    .err()
                    .unwrap_or_default();
                let why = if why.contains("does not name an item") {
                    why
                } else {
                    format!("src/{target} declares no `{}`", link.text.trim_matches('`'))
                };
                let _ = writeln!(errors, "{doc}:{}: [{}]: {why}", link.line, link.text);
            }
        }
    }
    assert!(
        checked >= 50,
        "only {checked} code links found: did the docs move?"
    );
    assert!(
        errors.is_empty(),
        "code links that no longer fit:\n{errors}"
    );
}

/// Relative links to files exist, and `#anchors` name a heading of their document.
#[test]
fn relative_links_resolve() {
    let mut errors = String::new();
    for doc in DOCS {
        let text = read(doc);
        let dir = root().join(doc).parent().expect("docs/").to_path_buf();
        for link in links(&text) {
            let target = link.target.as_str();
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                root().join(doc)
            } else {
                dir.join(file)
            };
            if !path.exists() {
                let _ = writeln!(errors, "{doc}:{}: {target}: no such file", link.line);
                continue;
            }
            let is_markdown = path.extension().is_some_and(|e| e == "md");
            if is_markdown && !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&path).unwrap_or_default());
                if !headings.contains(anchor) {
                    let _ = writeln!(errors, "{doc}:{}: #{anchor}: no such heading", link.line);
                }
            }
        }
    }
    assert!(errors.is_empty(), "broken links:\n{errors}");
}

/// The variants of `pub enum State { … }` in src/conn.rs, read from the source.
fn state_variants() -> BTreeSet<String> {
    let source = read("src/protocol/conn.rs");
    let start = source
        .find("pub enum State {")
        .expect("src/conn.rs declares `pub enum State {`");
    let body = &source[start + "pub enum State {".len()..];
    let body = &body[..body.find("\n}").expect("the enum's closing brace")];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
        .map(|l| {
            let end = l.find(|c: char| !is_ident_char(c)).unwrap_or(l.len());
            l[..end].to_string()
        })
        .collect()
}

/// The `A --> B` arrows of the one `stateDiagram-v2` block, labels dropped.
fn diagram_arrows() -> Vec<(String, String)> {
    let doc = read(ARCHITECTURE);
    let blocks: Vec<&str> = doc
        .split("```mermaid")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.trim_start().starts_with("stateDiagram-v2"))
        .collect();
    assert_eq!(blocks.len(), 1, "{ARCHITECTURE}: one stateDiagram-v2 block");
    let mut arrows = Vec::new();
    for line in blocks[0].lines().map(str::trim) {
        let Some((from, to)) = line.split_once("-->") else {
            continue;
        };
        let to = to.split(':').next().unwrap_or("");
        let (from, to) = (from.trim().to_string(), to.trim().to_string());
        for end in [&from, &to] {
            assert!(
                end == "[*]" || is_ident(end),
                "{ARCHITECTURE}: {end:?} in {line:?} is not a state name"
            );
        }
        arrows.push((from, to));
    }
    arrows
}

/// The states the diagram names are exactly the variants of `conn::State`.
#[test]
fn state_diagram_names_exactly_the_state_variants() {
    let in_diagram: BTreeSet<String> = diagram_arrows()
        .into_iter()
        .flat_map(|(a, b)| [a, b])
        .filter(|s| s != "[*]")
        .collect();
    let variants = state_variants();
    assert!(variants.len() >= 2, "parsed no variants: {variants:?}");
    assert_eq!(
        in_diagram, variants,
        "the state diagram in {ARCHITECTURE} and `enum State` in src/conn.rs disagree"
    );
}

/// Collects the transitions `Connection::set_state` logs at trace level.
struct TransitionLog(Mutex<BTreeSet<(String, String)>>);

impl log::Log for TransitionLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "echod::protocol::conn"
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "echod::protocol::conn" {
            return;
        }
        let message = record.args().to_string();
        if let Some((from, to)) = message
            .strip_prefix("connection state ")
            .and_then(|m| m.split_once(" => "))
        {
            let mut seen = self.0.lock().unwrap();
            seen.insert((from.to_string(), to.to_string()));
        }
    }

    fn flush(&self) {}
}

static TRANSITIONS: TransitionLog = TransitionLog(Mutex::new(BTreeSet::new()));

/// One thing the reactor can do to a connection.
#[derive(Debug, Clone, Copy)]
enum Step {
    Input(&'static [u8]),
    ReadClosed,
    Shutdown,
    Timeout,
    DrainTimeout,
    Error,
    SendAll,
    SendOne,
}

/// Inputs chosen to reach every limit with the small protocols below: a line, a
/// fragment, an over-long line, more replies than fit, PROXY headers good and bad, a
/// telnet Ctrl-C.
const STEPS: [Step; 14] = [
    Step::Input(b"hi\n"),
    Step::Input(b"frag"),
    Step::Input(b"a line that is far too long\n"),
    Step::Input(b"aaaaaa\nbbbbbb\ncccccc\ndddddd\n"),
    Step::Input(b"PROXY UNKNOWN\r\nhi\n"),
    Step::Input(b"GET / HTTP/1.0\r\n"),
    Step::Input(b"x\xff\xf4\xff\xfd\x06"),
    Step::ReadClosed,
    Step::Shutdown,
    Step::Timeout,
    Step::DrainTimeout,
    Step::Error,
    Step::SendAll,
    Step::SendOne,
];

fn apply(c: &mut Connection, p: &Rules, step: Step) {
    match step {
        Step::Input(bytes) => c.handle_input(p, bytes),
        Step::ReadClosed => c.handle_read_closed(p),
        Step::Shutdown => c.handle_shutdown(p),
        // The end of time: whatever the deadline was, it has passed.
        Step::Timeout => c.handle_timeout(p, Tick::NEVER),
        Step::DrainTimeout => c.handle_drain_timeout(),
        Step::Error => c.handle_error(),
        Step::SendAll => {
            let n = c.poll_output().len();
            c.advance_output(p, n);
        }
        Step::SendOne => {
            if !c.poll_output().is_empty() {
                c.advance_output(p, 1);
            }
        }
    }
}

/// Runs every sequence of up to `depth` steps from a new connection. Sequences go on
/// after `Closed` too: the state machine must stay there (it asserts so in debug builds).
fn explore(p: &Rules, depth: usize, prefix: &mut Vec<Step>) {
    if prefix.len() == depth {
        return;
    }
    for step in STEPS {
        prefix.push(step);
        let mut c = Connection::new(p);
        for &s in prefix.iter() {
            apply(&mut c, p, s);
        }
        explore(p, depth, prefix);
        prefix.pop();
    }
}

/// The arrows of the diagram are exactly the transitions the state machine makes, its
/// start states are where `Connection::new` starts, and it ends only in `Closed`.
#[test]
fn state_diagram_arrows_are_the_transitions_the_code_makes() {
    log::set_logger(&TRANSITIONS).expect("no other logger in this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let small = Rules {
        max_line: 8,
        max_pending: 16,
        ..Rules::default()
    };
    let protocols = [
        small.clone(),
        Rules {
            proxy_protocol: true,
            ..small.clone()
        },
        Rules {
            mode: Mode::Raw,
            banner: Vec::new(),
            prefix: Vec::new(),
            ..small.clone()
        },
        Rules {
            telnet: Telnet::On,
            ..small.clone()
        },
    ];
    let mut starts = BTreeSet::new();
    for p in &protocols {
        starts.insert(format!("{:?}", Connection::new(p).state()));
        explore(p, 4, &mut Vec::new());
    }
    let observed = TRANSITIONS.0.lock().unwrap().clone();
    assert!(
        !observed.is_empty(),
        "no transition was logged: does `Connection::set_state` still log \
         \"connection state A => B\" at trace level (and is `log` built with trace)?"
    );

    let arrows = diagram_arrows();
    let inner: BTreeSet<(String, String)> = arrows
        .iter()
        .filter(|(a, b)| a != "[*]" && b != "[*]")
        .cloned()
        .collect();
    let missing: Vec<_> = observed.difference(&inner).collect();
    let unseen: Vec<_> = inner.difference(&observed).collect();
    assert!(
        missing.is_empty() && unseen.is_empty(),
        "{ARCHITECTURE}'s state diagram and the code disagree.\n\
         transitions the code makes that the diagram lacks: {missing:?}\n\
         arrows in the diagram the code never took: {unseen:?}"
    );

    let diagram_starts: BTreeSet<String> = arrows
        .iter()
        .filter(|(a, _)| a == "[*]")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(diagram_starts, starts, "where connections start");
    let ends: BTreeSet<String> = arrows
        .iter()
        .filter(|(_, b)| b == "[*]")
        .map(|(a, _)| a.clone())
        .collect();
    assert_eq!(
        ends,
        BTreeSet::from([format!("{:?}", State::Closed)]),
        "only Closed connections are reaped"
    );
}

/// The helpers above must understand the shapes of code they are pointed at.
#[test]
fn the_link_checker_knows_items_fields_and_variants() {
    let lines = [
        "impl Server {",
        "    fn accept_all(&mut self, index: usize) {",
        "}",
        "pub enum State {",
        "    Lingering,",
        "}",
        "struct Entry {",
        "    can_read: bool,",
        "}",
        "fn read_some(entry: &mut Entry) {",
        "    read_some(entry);",
        "}",
        "const LINGER: Duration = Duration::from_secs(2);",
    ];
    let decl = |i: usize, name: &str| declares(lines[i], name, enclosing_item(&lines, i));
    assert!(decl(1, "accept_all"));
    assert!(!decl(1, "accept"));
    assert!(decl(4, "Lingering"));
    assert!(decl(7, "can_read"));
    assert!(decl(9, "read_some"));
    assert!(!decl(10, "read_some"), "a call is not a declaration");
    assert!(decl(12, "LINGER"));
    assert_eq!(enclosing_item(&lines, 1), "impl Server {");
    assert_eq!(
        slug(" 5.3 Half-close, and the lingering close"),
        "53-half-close-and-the-lingering-close"
    );
    assert_eq!(
        slug(" 4.2 `listen()`: what the backlog really does"),
        "42-listen-what-the-backlog-really-does"
    );
    let found = links("see [`Server::run`](../src/server.rs#L1) and [x](#y)\n```\n[no](z)\n```");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].text, "`Server::run`");
    assert_eq!(found[1].target, "#y");
}

/// README's options block is exactly what `echod --help` prints, so the two cannot drift.
#[test]
fn readme_options_are_the_help_text() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_echod"))
        .arg("--help")
        .output()
        .expect("run echod --help");
    let help = String::from_utf8(help.stdout).expect("utf-8 help");
    let options = help
        .split_once("Options:\n")
        .expect("--help has an Options section")
        .1;
    let readme = read("README.md");
    let block = readme
        .split_once("## Options\n\n```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("README has an Options block")
        .0;
    assert_eq!(
        block, options,
        "README's options differ from `echod --help`"
    );
}
