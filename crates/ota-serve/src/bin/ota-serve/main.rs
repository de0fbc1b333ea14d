//! The `ota-serve` command: serves a git repository over a GitHub-compatible API, or runs the
//! demo. Exit codes: 0 success, 1 error, 2 bad usage.

mod args;
mod demo;

use std::process::ExitCode;

use clap::Parser;

use args::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    // The demo prints every step itself; the library's own log lines would repeat them.
    let quiet_info = matches!(args.command, Some(Command::Demo(_))) && args.verbose == 0;
    init_logging(args.verbose, args.quiet, quiet_info);
    let result = match args.command {
        Some(Command::Demo(demo)) => demo::run(demo.dir),
        None => serve(args.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: args::ServeArgs) -> anyhow::Result<()> {
    // clap requires --repo when there is no subcommand.
    let Some(repo) = args.repo else {
        anyhow::bail!("--repo PATH is required: the git repository to serve");
    };
    let mut options = ota_serve::Options::new(repo);
    options.addr = args.addr;
    options.assets = args.assets;
    options.owner = args.owner;
    options.name = args.name;
    options.token = args.token;
    options.faults = args.faults;
    ota_serve::run(options)?;
    Ok(())
}

/// Logs to stderr: info by default (warnings only with `quiet_info`), `-v` debug, `-vv`
/// trace, `-q` errors only; `RUST_LOG` overrides.
fn init_logging(verbose: u8, quiet: bool, quiet_info: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) if quiet_info => "warn",
        (false, 0) => "ota_serve=info,ota=info",
        (false, 1) => "ota_serve=debug,ota=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal that can show it.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();
}
