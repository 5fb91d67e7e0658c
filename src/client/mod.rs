//! `echoc`: the client half of the tutorial, in the server's readiness style.
//!
//! Like `echod`, the client runs one thread around one `mio::Poll`: it asks
//! the kernel which sockets are ready, does what is possible without waiting,
//! and goes back to `poll`. The three modes show that same loop from the
//! client's side:
//!
//! - **one-shot** (`echoc [HOST] [PORT] --send TEXT`): resolve, connect (a
//!   non-blocking connect finishes when the socket turns writable), send,
//!   half-close, print everything until the server closes ([`session`]);
//! - **interactive** (`echoc [HOST] [PORT]`): the same, with stdin as a
//!   second source in the loop ([`stdin`] explains how, without threads);
//! - **load** (`echoc load HOST:PORT`): thousands of connections from one thread,
//!   every reply verified and timed ([`load`]); `echoc merge` adds up the logs
//!   of several runs ([`load::merge`]).
//!
//! Exit codes: 0 success, 1 runtime failure (and any load error), 2 a bad
//! command line. Every failure is one line on stderr, starting `echoc: `.

pub mod cli;
pub mod connect;
pub mod escape;
pub mod load;
pub mod session;
pub mod stdin;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// Something failed at run time: resolve, connect, reset, load errors.
pub const EXIT_FAILURE: u8 = 1;
/// The command line could not be understood.
pub const EXIT_USAGE: u8 = 2;

/// A runtime failure that ends the program: its one-line description (without
/// the `echoc: ` prefix). The process then exits with [`EXIT_FAILURE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Runs `echoc` with these arguments (without the program name) and returns
/// the exit code. Output goes to the process's stdout and stderr.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let command = match cli::parse(args) {
        Ok(command) => command,
        Err(reason) => {
            eprintln!("echoc: {reason} (try --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let outcome = match command {
        cli::Command::Help => {
            println!("{}", cli::USAGE);
            Ok(EXIT_OK)
        }
        cli::Command::Session(opts) => session::run(&opts).map(|()| EXIT_OK),
        cli::Command::Load(opts) => run_load(&opts),
        cli::Command::Merge(files, json) => run_merge(&files, json),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("echoc: {fatal}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Adds up the logs and prints one report, as for a single run; any error
/// counted in the runs makes the exit code 1.
fn run_merge(files: &[std::path::PathBuf], json: bool) -> Result<u8, Fatal> {
    let summary = load::merge::merge(files)?;
    print!("{}", summary.text());
    if json {
        println!("{}", summary.json());
    }
    Ok(match summary.total_errors() {
        0 => EXIT_OK,
        _ => EXIT_FAILURE,
    })
}

/// Runs the load, prints its summary (and JSON line), and turns any counted
/// error into exit code 1.
fn run_load(opts: &load::LoadOptions) -> Result<u8, Fatal> {
    let summary = load::run(opts)?;
    print!("{}", summary.text());
    if opts.json {
        println!("{}", summary.json());
    }
    Ok(match summary.total_errors() {
        0 => EXIT_OK,
        _ => EXIT_FAILURE,
    })
}
