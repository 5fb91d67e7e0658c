//! `echod`: parse the arguments, set up logging, run the server (or resume it after an
//! upgrade in place). Nothing else.

use std::io::Write;
use std::process::ExitCode;

use echod::config::{self, Command, Config};
use echod::logging::{self, NonBlockingGuard};
use echod::reactor::server::Server;
use echod::reactor::upgrade;
use log::{error, info, LevelFilter};

fn main() -> ExitCode {
    let mut config = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        // `print!` and `eprintln!` panic when the stream is closed (`echod --help | true`);
        // `write!` returns the error, and a failed write is a failed run.
        Ok(Command::Help) => return exit_after(write!(std::io::stdout(), "{}", config::usage())),
        Ok(Command::Version) => {
            let version = env!("CARGO_PKG_VERSION");
            return exit_after(writeln!(std::io::stdout(), "echod {version}"));
        }
        // A running echod asks this before it upgrades to us (SIGUSR2).
        Ok(Command::ResumeFormats) => {
            let formats: String = upgrade::resume_formats()
                .iter()
                .map(|f| format!("{f}\n"))
                .collect();
            return exit_after(write!(std::io::stdout(), "{formats}"));
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "echod: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    // Not flags: the test suite shortens the loop's fixed delays this way.
    config.timings = match config::Timings::from_env() {
        Ok(timings) => timings,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "echod: {e}");
            return ExitCode::from(2);
        }
    };
    // Held until `main` returns: dropping it puts stderr back in blocking mode.
    let _stderr_mode = init_logging(&config);
    if upgrade::resume_requested() {
        // The previous image of this process handed its clients over. If we cannot
        // take them, there is no one to give them back to: say why and exit 1.
        return match Server::resume(&config) {
            Ok(server) => serve(server),
            Err(e) => {
                error!("cannot resume after an upgrade: {e}");
                ExitCode::from(1)
            }
        };
    }
    let server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    info!(
        "echod {} starting: {:?} mode, telnet {}, max-line {} B, max-pending {} B, max-connections {}, idle-timeout {}, drain-timeout {}s",
        env!("CARGO_PKG_VERSION"),
        config.mode,
        format!("{:?}", config.telnet).to_lowercase(),
        config.max_line,
        config.max_pending,
        server.max_connections(),
        config.idle_timeout.map_or("off".to_string(), |t| format!("{}s", t.as_secs())),
        config.drain_timeout.as_secs(),
    );
    serve(server)
}

/// Runs the loop to its end; 0 after a clean shutdown, 1 if the loop failed.
fn serve(server: Server) -> ExitCode {
    match server.run() {
        Ok(_) => {
            info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// 0 when `written` succeeded, else 1 (stdout closed or full: nothing to report it to).
fn exit_after(written: std::io::Result<()>) -> ExitCode {
    match written.and_then(|()| std::io::stdout().flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// Logs go to stderr at `--log-level`, else `RUST_LOG` (a plain level such as `debug`;
/// anything else means info), else info. See [`echod::logging`] for why a closed or full
/// stderr costs log lines and never the server.
fn init_logging(config: &Config) -> NonBlockingGuard<std::io::Stderr> {
    let level = config.log_level.unwrap_or_else(|| {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(LevelFilter::Info)
    });
    logging::init(level)
}
