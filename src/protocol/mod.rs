//! The socket-free protocol core: what echod says to a client, as plain Rust.
//!
//! Nothing under `src/protocol/` touches `mio`, a socket or a clock (from `std::net` it
//! takes only address types). Each piece takes
//! bytes (or an event such as "the peer closed") and returns bytes and decisions, so
//! every edge case is tested with byte slices, split at every offset, without a network.
//!
//! - [`line`](mod@line): framing: where a line ends, and the one function that builds a reply.
//! - [`fast`]: the same framing tuned for reads of many short lines, proven equal to `line`.
//! - [`conn`]: one client's state machine: states, buffers, limits, backpressure.
//! - [`telnet`]: the telnet command filter (`--telnet`).
//! - [`proxy`]: the PROXY protocol header parser (`--proxy-protocol`).
//! - [`tick`]: time as a number the reactor hands in; the core reads no clock.
//! - [`state`]: the byte codec that saves a connection for an upgrade in place.

pub mod conn;
pub mod fast;
pub mod line;
pub mod proxy;
pub mod state;
pub mod telnet;
pub mod tick;
