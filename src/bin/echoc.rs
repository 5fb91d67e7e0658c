//! `echoc`: the echod client (one-shot, interactive, and load modes).
//!
//! Everything lives in the library's [`echod::client`] module so that it can
//! be unit-tested; this file only hands over the arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    echod::client::main(std::env::args_os().skip(1).collect())
}
