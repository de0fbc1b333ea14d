//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A GitHub-compatible server over a local git repository: ota's test fixture, demo server
/// and LAN mirror.
///
/// Without a command, serves `--repo` until Ctrl-C. Point a device at it with
/// `api_url = "http://HOST:PORT"` and `raw_url = "http://HOST:PORT/raw"`.
#[derive(Debug, Parser)]
#[command(
    name = "ota-serve",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// What to serve and how.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// More log output on stderr (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The commands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a sample repository, serve it on 127.0.0.1, install v1 with the ota library,
    /// then update to v2, printing each step.
    Demo(DemoArgs),
}

/// Serving a repository.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The git repository to serve (bare or with a work tree).
    #[arg(long, required = true)]
    pub repo: Option<PathBuf>,
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
    /// Require `Authorization: Bearer TOKEN` (or `token TOKEN`) on every API, raw and download
    /// request; answer 401 without it.
    #[arg(long, env = "OTA_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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

/// `ota-serve demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Work in this folder (kept afterwards) instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::{Args, Command};

    fn serve(extra: &[&str]) -> Result<Vec<ota_serve::fault::Fault>, clap::Error> {
        let mut argv = vec!["ota-serve", "--repo", "/r"];
        argv.extend_from_slice(extra);
        Ok(Args::try_parse_from(argv)?.serve.faults)
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

    #[test]
    fn repo_is_required_to_serve_but_not_for_the_demo() {
        let err = Args::try_parse_from(["ota-serve"]).unwrap_err();
        assert!(err.to_string().contains("--repo"), "{err}");
        let args = Args::try_parse_from(["ota-serve", "demo", "--dir", "/d"]).unwrap();
        assert!(matches!(args.command, Some(Command::Demo(ref d)) if d.dir.is_some()));
        assert!(Args::try_parse_from(["ota-serve", "--repo", "/r", "demo"]).is_err());
    }
}
