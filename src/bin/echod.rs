//! `echod`: parse the arguments, set up logging, run the server. Nothing else.

use std::process::ExitCode;

use echod::config::{self, Command, Config};
use echod::reactor::server::Server;
use log::{error, info, LevelFilter};

fn main() -> ExitCode {
    let config = match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("echod {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echod: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
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

/// Logs go to stderr (`simple_logger`'s stdout mode panics on EPIPE, e.g. when journald
/// restarts), at `--log-level`, else `RUST_LOG`, else info. mio's own trace logs are
/// kept below warn: they describe every registration and would drown ours.
fn init_logging(config: &Config) {
    let mut logger = simple_logger::SimpleLogger::new()
        .with_level(LevelFilter::Info)
        .with_utc_timestamps();
    logger = match config.log_level {
        Some(level) => logger.with_level(level),
        None => logger.env(),
    };
    let _ = logger.with_module_level("mio", LevelFilter::Warn).init();
}
