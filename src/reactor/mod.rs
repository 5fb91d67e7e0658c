//! The reactor: one thread, one `mio::Poll`, and a slab of connections.
//!
//! This is where sockets live. The reactor moves bytes between sockets and the state
//! machines of [`crate::protocol`], and owns everything that needs the OS or a clock.
//!
//! - [`server`]: the loop itself: listeners, connections, signals, deadlines.
//! - [`accept`]: accepting connections, turning away the ones over the limit.
//! - [`io`]: moving bytes between a socket and its state machine (read until the socket
//!   is empty, write until it is full), and what the loop keeps per connection.
//! - [`memory`]: `--max-memory`: pause, then evict, the largest clients.
//! - [`listen`]: listening sockets (a real `listen()` backlog, or inherited from systemd).
//! - [`alarm`]: the loop's alarm clock for the nearest deadline.
//! - [`timers`]: the deadlines, as a lazily re-armed heap (no wakeups while idle).
//! - [`slots`]: the slab of connections, with removal deferred to the end of a batch.
//! - [`stats`]: the counters the loop keeps.
//! - [`metrics`]: `--metrics`: Prometheus scrapes, served by the same loop.
//! - [`upgrade`]: SIGUSR2: become a new build of the binary, same PID, every
//!   connection kept.

pub mod accept;
pub mod alarm;
pub mod io;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod slots;
pub mod stats;
pub mod timers;
pub mod upgrade;
