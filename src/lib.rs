//! echod: a line-echo TCP daemon on one single-threaded mio readiness loop.
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

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
