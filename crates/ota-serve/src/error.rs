//! The crate's one error type.
//!
//! Errors only arise while starting the server (bad repository path, port in use, unreadable
//! assets directory) or while writing fixture repositories. Failures while answering a request
//! never escape as `Error`: they become an HTTP status (404, 422, 500) for that request only.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start, or why a fixture repository could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository path is not a git repository gix can open.
    #[error(
        "cannot open the git repository at {path} (give the path of a bare repository or of a work tree)"
    )]
    OpenRepo {
        /// The path that was given.
        path: PathBuf,
        /// What gix reported.
        #[source]
        source: gix::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr} (is the port in use?)")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// The assets directory is missing or unreadable.
    #[error("cannot use the release assets directory {path} (expected DIR/<tag>/<file>)")]
    Assets {
        /// The directory that was given.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// The async runtime or the server thread could not be started.
    #[error("cannot start the server's runtime")]
    Runtime(#[source] io::Error),
    /// Reading or writing git objects or references failed.
    #[error("git: {context}")]
    Git {
        /// What was being done.
        context: String,
        /// What gix reported.
        #[source]
        source: gix::Error,
    },
    /// The repository is damaged: an object it refers to is missing or malformed.
    #[error("the repository is damaged: {0}")]
    Corrupt(String),
    /// A file-system operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// Input to the fixture writer was invalid (a bad path, a bad object id, a name clash).
    #[error("invalid fixture input: {0}")]
    Invalid(String),
}

impl Error {
    /// Shorthand for mapping a gix error with a description of what was being done.
    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(gix::Error) -> Error {
        let context = context.into();
        move |source| Error::Git { context, source }
    }

    /// Shorthand for mapping an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Formats an error with all its causes on one line, for logs and 500 bodies.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
