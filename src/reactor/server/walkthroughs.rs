//! The walk-throughs of docs/ARCHITECTURE.md, driven through a real
//! server.
//!
//! Each test drives one path (one line from the socket to its reply, a client's close,
//! accepting a client, the drain) through a server on a loopback port, turning its loop
//! by hand, while [`trail::recording`] notes every [`waypoint`](crate::waypoint) passed.
//! Then it reads the walk-through's section of the doc: every link to a function must
//! name a function that ran, and they must have run in the order the doc tells them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use mio::Events;
use signal_hook::consts::SIGTERM;

use super::Server;
use crate::config::Config;
use crate::io_errors::would_block;
use crate::walkthrough::trail::{self, Passed};

/// Signals go to the whole process, so every server of this test binary would see the
/// drain test's SIGTERM: tests with a server share this lock, the drain test owns it.
static SIGNALS: RwLock<()> = RwLock::new(());

/// For a test that runs a server: no test raises a signal meanwhile.
pub(super) fn sharing_signals() -> RwLockReadGuard<'static, ()> {
    SIGNALS.read().unwrap_or_else(|e| e.into_inner())
}

fn owning_signals() -> RwLockWriteGuard<'static, ()> {
    SIGNALS.write().unwrap_or_else(|e| e.into_inner())
}

// ---- the docs' side --------------------------------------------------------------------

/// A function a walk-through links to: the file it is in, and its name.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    file: String,
    name: String,
}

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of `doc` under the heading `heading`, down to the next heading.
fn section(doc: &str, heading: &str) -> String {
    let text = repo_file(doc);
    let mut lines = text.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "{doc} has no heading {heading:?}");
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|&c| c == '#').count();
            !(hashes > 0 && l[hashes..].starts_with(' '))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The functions a section links to, in the order it names them: links of the form
/// [`Type::name`](../src/FILE.rs) where FILE declares a function `name` (links to types,
/// constants and whole files are skipped).
fn linked_functions(section: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("](../src/") {
        let text = rest[..at].rsplit_once('[').map_or("", |(_, text)| text);
        let target_start = at + "](../".len();
        let end = rest[target_start..].find(')').expect("a link ends") + target_start;
        let file = &rest[target_start..end];
        rest = &rest[end..];
        let item = text.trim_matches('`').trim_end_matches("()");
        let name = item.rsplit("::").next().unwrap_or(item);
        let source = repo_file(file);
        if source
            .lines()
            .any(|l| declared_function(l).as_deref() == Some(name))
        {
            let step = Step {
                file: file.to_string(),
                name: name.to_string(),
            };
            // A step named twice in a row ("... calls `f`. `f` then ...") is one step.
            if steps.last() != Some(&step) {
                steps.push(step);
            }
        }
    }
    steps
}

/// The function `line` declares, if it declares one.
fn declared_function(line: &str) -> Option<String> {
    let after = line.split_once("fn ")?.1;
    let before = line.split_once("fn ")?.0.trim();
    let qualifiers_only = before
        .split_whitespace()
        .all(|w| w.starts_with("pub") || w == "const");
    if !qualifiers_only {
        return None;
    }
    let name: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Checks that the functions the section `heading` of `doc` links to all ran, in the order
/// the section names them (each found after the one before it in `trail`).
fn assert_walk(doc: &str, heading: &str, trail: &[Passed], at_least: usize) {
    // Shown when the test fails.
    let ran: Vec<&str> = trail.iter().map(|p| p.name).collect();
    eprintln!("what ran: {}", ran.join(" → "));
    let steps = linked_functions(&section(doc, heading));
    assert!(
        steps.len() >= at_least,
        "{doc} {heading:?} links only {} functions: {steps:?}",
        steps.len()
    );
    let mut from = 0;
    for step in &steps {
        let found = trail[from..]
            .iter()
            .position(|p| p.name == step.name && p.file == step.file);
        match found {
            Some(i) => from += i + 1,
            None => {
                let ran_at_all = trail.iter().any(|p| p.name == step.name);
                panic!(
                    "{doc} {heading:?} names {}::{} {}.\nThe functions it links: {:?}",
                    step.file,
                    step.name,
                    if ran_at_all {
                        "earlier than the doc says"
                    } else {
                        "but it never ran (or has no waypoint)"
                    },
                    steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                );
            }
        }
    }
}

// ---- the server's side -----------------------------------------------------------------

/// A server on an ephemeral loopback port, with `tweak` applied to the defaults.
pub(super) fn test_server(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    tweak(&mut config);
    Server::bind(&config).unwrap()
}

/// Turns the loop until `done` says so (at most 10 s); true if the loop ended.
fn turn_until(server: &mut Server, mut done: impl FnMut(&mut Server) -> bool) -> bool {
    let mut events = Events::with_capacity(64);
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done(server) {
        assert!(Instant::now() < give_up, "the loop never got there");
        if server
            .run_once(&mut events, Some(Duration::from_millis(20)))
            .unwrap()
        {
            return true;
        }
    }
    false
}

/// Turns the loop until `client` has received exactly `want` more bytes.
fn serve_until(server: &mut Server, client: &mut TcpStream, want: &[u8]) {
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    turn_until(server, |_| {
        let mut buf = [0; 256];
        match client.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if would_block(&e) => {}
            Err(e) => panic!("client read: {e}"),
        }
        got.len() >= want.len()
    });
    assert_eq!(got, want);
}

/// Turns the loop until `client` reads the end of the stream.
fn serve_until_closed(server: &mut Server, client: &mut TcpStream) {
    client.set_nonblocking(true).unwrap();
    let mut closed = false;
    turn_until(server, |_| {
        let mut buf = [0; 256];
        match client.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(n) => panic!("unexpected bytes: {:?}", &buf[..n]),
            Err(e) if would_block(&e) => {}
            Err(e) => panic!("client read: {e}"),
        }
        closed
    });
}

/// A connected client that has read its banner.
fn connected(server: &mut Server) -> TcpStream {
    let mut client = TcpStream::connect(server.local_addrs()[0]).unwrap();
    let banner = Config::default().banner;
    serve_until(server, &mut client, &banner);
    client
}

const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

#[test]
fn the_path_of_one_line() {
    let _signals = sharing_signals();
    let mut server = test_server(|_| {});
    let mut client = connected(&mut server);
    let trail = trail::recording(|| {
        client.write_all(b"hi\n").unwrap();
        serve_until(&mut server, &mut client, b"OK...hi\n");
    });
    assert_walk(ARCHITECTURE, "## The path of one line", &trail, 10);
    let read = "### 4.6 `recv()` becomes `read_once` into one shared buffer";
    assert_walk(ARCHITECTURE, read, &trail, 6);
    assert_walk(
        ARCHITECTURE,
        "### 4.7 `send()` becomes `write_out`",
        &trail,
        3,
    );
}

#[test]
fn a_line_that_needs_a_decision() {
    let _signals = sharing_signals();
    // The reply (5 + 21 bytes) is over --max-pending: the tuned path leaves the line to
    // the plain steps, which answer it because nothing else is pending.
    let mut server = test_server(|c| c.max_pending = 16);
    let mut client = connected(&mut server);
    let trail = trail::recording(|| {
        client.write_all(b"a line over sixteen.\n").unwrap();
        serve_until(&mut server, &mut client, b"OK...a line over sixteen.\n");
    });
    assert_walk(ARCHITECTURE, "### A line that needs a decision", &trail, 4);
}

#[test]
fn the_clients_close() {
    let _signals = sharing_signals();
    let mut server = test_server(|_| {});
    let mut client = connected(&mut server);
    let trail = trail::recording(|| {
        client.write_all(b"bye").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        serve_until(&mut server, &mut client, b"OK...bye");
        serve_until_closed(&mut server, &mut client);
        turn_until(&mut server, |s| s.conns.is_empty());
    });
    assert_walk(ARCHITECTURE, "### The client's close", &trail, 8);
    assert_walk(
        ARCHITECTURE,
        "### 4.8 `close()` becomes retire, then reap",
        &trail,
        4,
    );
    assert_walk(ARCHITECTURE, "#### The client half-closes", &trail, 3);
}

#[test]
fn we_close_first() {
    let _signals = sharing_signals();
    let mut server = test_server(|c| c.max_line = 10);
    let mut client = connected(&mut server);
    let trail = trail::recording(|| {
        client.write_all(b"this line is far too long\n").unwrap();
        serve_until(&mut server, &mut client, b"ERR line too long\n");
        serve_until_closed(&mut server, &mut client);
        // Lingering: what the client still sends is read and dropped, until its FIN.
        let _ = client.write_all(b"more\n");
        client.shutdown(Shutdown::Write).unwrap();
        turn_until(&mut server, |s| s.conns.is_empty());
    });
    assert_walk(ARCHITECTURE, "#### We close first", &trail, 4);
}

#[test]
fn accepting_a_client() {
    let _signals = sharing_signals();
    let mut server = test_server(|_| {});
    let trail = trail::recording(|| {
        connected(&mut server);
    });
    assert_walk(ARCHITECTURE, "## Accepting a client", &trail, 6);
    let accept = "### 4.3 `accept()`: accept until `WouldBlock`";
    assert_walk(ARCHITECTURE, accept, &trail, 7);
    assert_walk(
        ARCHITECTURE,
        "### 4.4 The accept loop becomes the event loop",
        &trail,
        10,
    );
}

#[test]
fn the_drain() {
    let _signals = owning_signals();
    let mut server = test_server(|_| {});
    let mut client = connected(&mut server);
    let trail = trail::recording(|| {
        // A line the server has not read yet when the signal comes: it is answered.
        client.write_all(b"last\n").unwrap();
        signal_hook::low_level::raise(SIGTERM).unwrap();
        serve_until(&mut server, &mut client, b"OK...last\n");
        serve_until_closed(&mut server, &mut client);
        client.shutdown(Shutdown::Write).unwrap();
        assert!(turn_until(&mut server, |_| false), "the loop ends");
    });
    assert!(server.listeners.is_empty());
    assert_walk(ARCHITECTURE, "## The drain", &trail, 8);
    assert_walk(ARCHITECTURE, "### 5.9 Shutting down: the drain", &trail, 6);
}

/// Every waypoint names the function it is in (the name is what the tests compare with
/// the docs).
#[test]
fn every_waypoint_names_its_function() {
    let mut checked = 0;
    for file in source_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(call) = line.trim().strip_prefix("waypoint(\"") else {
                continue;
            };
            let name = call.split('"').next().unwrap();
            let enclosing = lines[..i]
                .iter()
                .rev()
                .find_map(|l| declared_function(l))
                .unwrap_or_default();
            assert_eq!(name, enclosing, "{}:{}", file.display(), i + 1);
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} waypoints found");
}

fn source_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
