//! Command-line arguments.

#[cfg(feature = "serve")]
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps a directory on this device equal to a GitHub release or branch, crash-safely.
#[derive(Debug, Parser)]
#[command(name = "ota", version, about, propagate_version = true)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log output on stderr (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check for an update and apply it if there is one.
    Update(UpdateArgs),
    /// Check for an update; exit 0 when up to date, 100 when one is available, 1 on error.
    Check(CheckArgs),
    /// Show the installed release, a pending recovery, and the last error.
    Status(StatusArgs),
    /// Finish or undo an interrupted update (every command that changes the target does
    /// this first).
    Recover(RecoverArgs),
    /// Serve a local git repository over a GitHub-compatible API (tests, demo, LAN mirror).
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Build a sample repository, serve it on 127.0.0.1, install v1, then update to v2.
    #[cfg(feature = "serve")]
    Demo(DemoArgs),
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Update(a) => a.json,
            Command::Check(a) => a.json,
            Command::Status(a) => a.json,
            _ => false,
        }
    }
}

/// Where the configuration is.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML, JSON, or the original updater's ota_config.json).
    #[arg(short, long, env = "OTA_CONFIG", default_value = "/etc/ota.toml")]
    pub config: PathBuf,
}

/// `ota update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Reinstall even when up to date, verifying every file on disk.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (adds, replaces, deletes, bytes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `ota serve`.
#[cfg(feature = "serve")]
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The git repository to serve (bare or with a work tree).
    #[arg(long)]
    pub repo: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Release assets: DIR/{tag}/{name}.
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Only answer for this owner (default: any).
    #[arg(long)]
    pub owner: Option<String>,
    /// Only answer for this repository name (default: any).
    #[arg(long)]
    pub name: Option<String>,
    /// Misbehave on purpose for matching requests (repeatable; see --help for the syntax)
    ///
    /// SPEC is PATTERN=ACTION[:VALUE][,PARAM:VALUE...][,skip=N][,times=N]. PATTERN is matched
    /// against the request path and query; `*` matches any run of characters. skip=N lets
    /// the first N matching requests through; times=N faults only N requests after them.
    /// Every matching rule applies (latency + bandwidth + reset combine); of status,
    /// rate-limit, redirect and body only the first. /_ota/stats is never faulted.
    ///
    ///   *=latency:50ms                    wait before the response head (twice on a new
    ///                                     connection); units ns us ms s m h
    ///   *=bandwidth:2000000               body bytes/second, shared by all connections
    ///   /raw/*=reset-after:1000           head + 1000 body bytes, then RST
    ///   /raw/*=truncate:1000              head + 1000 body bytes, then FIN
    ///   /raw/*=flip-byte:5                invert the body byte at offset 5
    ///   /raw/*=stall:100,pause:30s        100 body bytes, nothing for 30 s, the rest
    ///   /raw/*=status:503,skip=1,times=2  answer 503 (400-599) with GitHub's JSON error
    ///   *=rate-limit:429,reset-in:2s,retry-after:1s
    ///                                     403 or 429 with x-ratelimit-remaining: 0
    ///                                     (reset-in defaults to 60s, retry-after to none)
    ///   /raw/*=wrong-length:-10           declare Content-Length 10 short (+N: N long)
    ///   /raw/*=redirect:localhost:8080    302 to the same path on host:port
    ///   */git/trees/*=body:@FILE          answer FILE's bytes instead (type from the
    ///                                     extension, or add ,type:MIME)
    #[arg(long = "fault", value_name = "SPEC", verbatim_doc_comment)]
    pub faults: Vec<ota_serve::fault::Fault>,
}

/// `ota demo`.
#[cfg(feature = "serve")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Work in this folder (kept afterwards) instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[cfg(all(test, feature = "serve"))]
mod tests {
    use clap::Parser;

    use super::{Args, Command};

    fn serve(extra: &[&str]) -> Result<Vec<ota_serve::fault::Fault>, clap::Error> {
        let mut argv = vec!["ota", "serve", "--repo", "/r"];
        argv.extend_from_slice(extra);
        match Args::try_parse_from(argv)?.command {
            Command::Serve(serve) => Ok(serve.faults),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn fault_is_repeatable_and_parsed() {
        assert!(serve(&[]).unwrap().is_empty());
        let faults = serve(&[
            "--fault",
            "/raw/*=reset-after:1000,times=3",
            "--fault",
            "*=latency:50ms",
        ])
        .unwrap();
        let shown: Vec<String> = faults.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["/raw/*=reset-after:1000,times=3", "*=latency:50ms"]);
    }

    #[test]
    fn a_bad_fault_says_what_is_wrong() {
        let err = serve(&["--fault", "/raw/*=status:200"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--fault"), "{text}");
        assert!(
            text.contains("`status` must be 400 to 599, got 200"),
            "{text}"
        );
    }
}
