//! echod: a line-echo TCP daemon on one single-threaded mio readiness loop.
#![deny(missing_debug_implementations, rust_2018_idioms)]

pub mod client;
pub mod telnet;
