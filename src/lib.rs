//! echod: a line-echo TCP daemon and client on one single-threaded `mio` readiness loop.
//!
//! The classic socket tutorial serves each client with a thread that blocks in `recv()`.
//! echod serves thousands with one thread that never blocks: it asks the kernel which
//! sockets are ready, does exactly the work each one allows, and goes back to sleep.
//! Everything that decides *what* to send lives in plain, socket-free state machines;
//! one module moves the bytes.
//!
//! # Layout
//!
//! Pure modules (no sockets, no clock; tested byte by byte):
//! - [`config`]: options and limits, with their defaults and reasons; argument parsing.
//! - [`line`](mod@line): framing: where a line ends, what its reply is.
//! - [`conn`]: one client's state machine: states, buffers, limits, backpressure.
//! - [`telnet`]: the `--telnet` command filter.
//! - [`proxy`]: the `--proxy-protocol` header parser (HAProxy v1 and v2).
//! - [`timers`]: deadlines as a lazily re-armed heap (no wakeups while idle).
//! - [`slots`]: the slab of connections, with removal deferred to the end of a batch.
//! - [`stats`]: the counters.
//!
//! I/O modules:
//! - [`server`]: the reactor, the only server module that touches sockets.
//! - [`alarm`]: the loop's alarm clock, a timerfd set to the next deadline.
//! - [`net`]: listener set-up and error predicates.
//! - [`client`]: `echoc`'s one-shot, interactive and load modes, in the same style.
//!
//! # Reading order
//!
//! 1. [`line`](mod@line), then [`conn`]: what the server says to one client, with no network.
//! 2. [`server`]: how one loop drives thousands of those state machines from readiness
//!    events; then [`slots`] and [`timers`], which it leans on.
//! 3. [`client`]: the same ideas from the other end of the socket.
//!
//! # Driving a connection by hand
//!
//! The state machine takes bytes and gives bytes; nothing else is needed to see the
//! protocol work:
//!
//! ```
//! use echod::conn::{Connection, Protocol};
//!
//! let p = Protocol::default();
//! let mut conn = Connection::new(&p);
//! conn.handle_input(&p, b"hello\nwor");     // one and a half lines arrive
//! conn.handle_input(&p, b"ld\n");           // the rest of the second
//! let out = conn.poll_output().to_vec();    // what the socket should send
//! conn.advance_output(&p, out.len());       // ... and it took all of it
//! assert!(out.ends_with(b"OK...hello\nOK...world\n"));
//! assert!(conn.poll_output().is_empty());
//! ```
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod alarm;
pub mod client;
pub mod config;
pub mod conn;
pub mod line;
pub mod net;
pub mod proxy;
pub mod server;
pub mod slots;
pub mod stats;
pub mod telnet;
pub mod timers;
