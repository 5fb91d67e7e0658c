//! echod: a line-echo TCP daemon and client on one single-threaded `mio` readiness loop.
//!
//! The classic socket tutorial serves each client with a thread that blocks in `recv()`.
//! echod serves thousands with one thread that never blocks: it asks the kernel which
//! sockets are ready, does exactly the work each one allows, and goes back to sleep.
//! Everything that decides *what* to send lives in plain, socket-free state machines;
//! the [`reactor`] moves the bytes.
//!
//! # Layout
//!
//! The folders are the architecture: what a file may touch is answered by its path.
//!
//! - [`protocol`] (`src/protocol/`): the socket-free core. No sockets, no clock; tested
//!   byte by byte.
//!   - [`protocol::line`]: framing: where a line ends, what its reply is.
//!   - [`protocol::fast`]: the same framing tuned for reads of many short lines.
//!   - [`protocol::conn`]: one client's state machine: states, buffers, limits.
//!   - [`protocol::telnet`]: the `--telnet` command filter.
//!   - [`protocol::proxy`]: the `--proxy-protocol` header parser (HAProxy v1 and v2).
//!   - [`protocol::state`]: the byte codec a connection is saved with for an upgrade.
//! - [`reactor`] (`src/reactor/`): the server's I/O: the one `mio` loop and what it owns.
//!   - [`reactor::server`]: the loop: listeners, connections, signals, deadlines.
//!   - [`reactor::accept`], [`reactor::io`], [`reactor::listen`], [`reactor::alarm`],
//!     [`reactor::timers`], [`reactor::slots`], [`reactor::memory`], [`reactor::stats`],
//!     [`reactor::metrics`]: what the loop leans on.
//!   - [`reactor::upgrade`]: SIGUSR2: become a new build of the binary, same PID, every
//!     connection kept (a connection is a descriptor plus a value).
//! - [`client`] (`src/client/`): `echoc`'s one-shot, interactive and load modes, in the
//!   same readiness style.
//! - [`config`]: options and limits, with their defaults and reasons; argument parsing.
//! - [`io_errors`]: the `io::Error` questions both ends ask (`would_block`, …).
//! - [`logging`]: the daemon's logger: a full or closed stderr drops (and counts) the
//!   line; it never stops or stalls the loop.
//! - `walkthrough` (`src/walkthrough.rs`): the `waypoint("name")` call that opens each
//!   function the docs' walk-throughs link. It is nothing in the daemon; under
//!   `cargo test` it records the path taken, and `reactor::server::walkthroughs` checks
//!   that docs/ARCHITECTURE.md names the functions that really run,
//!   in order.
//!
//! # Reading order
//!
//! The same order as README.md and docs/ARCHITECTURE.md:
//!
//! 1. The ladder in `examples/`, with docs/TUTORIAL.md: `step1_client.rs` (the blocking
//!    client), `step2_blocking.rs`, `step3_threads.rs`, `step4_reactor.rs` (one poll loop),
//!    `step5_bounded.rs`, `step6_sans_io.rs`, `step7_timers_signals.rs`; each a complete
//!    program and a diff against the one before (`cargo run --example step4_reactor`).
//! 2. The daemon, as docs/ARCHITECTURE.md maps it: [`protocol::line`], then
//!    [`protocol::conn`] (what the server says to one client, with no network; step 6's
//!    `Conn` grown up), then [`reactor::server`] (step 7's loop grown up), and
//!    [`reactor::slots`] and [`reactor::timers`], which it leans on.
//! 3. [`client`]: the same ideas from the other end of the socket.
//!
//! # Driving a connection by hand
//!
//! The state machine takes bytes and gives bytes; nothing else is needed to see the
//! protocol work:
//!
//! ```
//! use echod::protocol::conn::{Connection, Rules};
//!
//! let p = Rules::default();
//! let mut conn = Connection::new(&p);
//! conn.handle_input(&p, b"hello\nwor");     // one and a half lines arrive
//! conn.handle_input(&p, b"ld\n");           // the rest of the second
//! let out = conn.poll_output().to_vec();    // what the socket should send
//! conn.advance_output(&p, out.len());       // ... and it took all of it
//! assert!(out.ends_with(b"OK...hello\nOK...world\n"));
//! assert!(conn.poll_output().is_empty());
//! ```
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod client;
pub mod config;
pub mod io_errors;
pub mod logging;
pub mod protocol;
pub mod reactor;
mod walkthrough;

pub(crate) use walkthrough::waypoint;
