//! A child process's standard output as a response body, sent while the child writes it (how
//! codeload sends `git archive`'s output: the client reads the first entries while the last
//! ones are still being compressed).
//!
//! A thread per child reads its stdout in chunks and hands them to the body through a channel
//! of [`QUEUE`] chunks, so a slow client makes the child wait on a full pipe instead of the
//! server buffering the output: memory stays within a few chunks however long the output is.
//! The thread also reaps the child. When the body is dropped (the client went away, the
//! server is shutting down), the child is killed at once and the thread reaps it.
//!
//! The output's length is not known until the end, so the response carries no
//! `Content-Length` (hyper sends it chunked). A child that fails after its first bytes can
//! only end the body with an error: hyper then stops without the last chunk, and the client
//! sees a body that broke off.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::wire::CHUNK;

/// Chunks read ahead of the client at most (with the pipe's own buffer, a few hundred KiB).
const QUEUE: usize = 4;

/// The most of a failed child's stderr quoted in the error.
const STDERR_QUOTE: u64 = 4096;

/// The output of a running child process, read as the child writes it.
pub(crate) struct Piped {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    /// Shared with the reading thread, which reaps the child; dropping the body kills it.
    child: Arc<Mutex<Child>>,
    /// The chunk [`Piped::first`] took out of the channel ahead of the body.
    ready: Option<io::Result<Bytes>>,
    ended: bool,
}

impl std::fmt::Debug for Piped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piped").field("ended", &self.ended).finish()
    }
}

impl Piped {
    /// Starts `command` with stdout piped (stdin empty, stderr kept for the error message)
    /// and a thread that reads it; `what` names the work in errors.
    pub(crate) fn spawn(mut command: Command, what: String) -> io::Result<Piped> {
        // stderr goes to a file, not a pipe: a child that writes much to stderr while we
        // wait on its stdout cannot block on it.
        let stderr = tempfile::tempfile()?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone()?)
            .spawn()?;
        let Some(stdout) = child.stdout.take() else {
            reap(&mut child);
            return Err(io::Error::other("the child's stdout was not piped"));
        };
        let child = Arc::new(Mutex::new(child));
        let (tx, chunks) = mpsc::channel(QUEUE);
        let shared = Arc::clone(&child);
        let pump = std::thread::Builder::new()
            .name("ota-serve-pipe".to_string())
            .spawn(move || pump(&shared, stdout, stderr, &tx, &what));
        if let Err(err) = pump {
            reap(&mut lock(&child));
            return Err(err);
        }
        Ok(Piped {
            chunks,
            child,
            ready: None,
            ended: false,
        })
    }

    /// Waits (blocking the thread: call it off the async workers) for the first chunk, so
    /// that a child that fails at once is reported before any status line is sent. `Ok` with
    /// the output still to be read, or the child's error.
    pub(crate) fn first(mut self) -> io::Result<Piped> {
        match self.chunks.blocking_recv() {
            Some(Err(err)) => Err(err),
            Some(Ok(chunk)) => {
                self.ready = Some(Ok(chunk));
                Ok(self)
            }
            None => {
                // Empty output from a child that succeeded.
                self.ended = true;
                Ok(self)
            }
        }
    }

    /// The next chunk; `None` once the child has exited successfully after its last byte.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(ready) = self.ready.take() {
            return Poll::Ready(Some(ready));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let next = std::task::ready!(self.chunks.poll_recv(cx));
        if !matches!(next, Some(Ok(_))) {
            self.ended = true;
        }
        Poll::Ready(next)
    }

    /// Whether the body has yielded everything (the child exited, all its output taken).
    pub(crate) fn is_done(&self) -> bool {
        self.ended && self.ready.is_none()
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        // Closed first, so that the reading thread does not take the kill below for a failure
        // worth logging.
        self.chunks.close();
        // Kill the child now rather than when it next writes; the reading thread then sees
        // the end of its stdout and reaps it. If the thread holds the lock it is already
        // reaping a child that closed its stdout (and `kill` on a reaped child does nothing,
        // so a reused PID is never hit).
        match self.child.try_lock() {
            Ok(mut child) => {
                let _ = child.kill();
            }
            Err(TryLockError::Poisoned(poisoned)) => {
                let _ = poisoned.into_inner().kill();
            }
            Err(TryLockError::WouldBlock) => {}
        }
    }
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills (if still running) and waits for `child`, so that it leaves no zombie.
fn reap(child: &mut Child) {
    let _ = child.kill();
    if let Err(err) = child.wait() {
        tracing::warn!("cannot reap child process {}: {err}", child.id());
    }
}

/// The reading thread: stdout to the channel in chunks, then the child's exit status (an
/// error chunk if it failed). Stops early, killing the child, when the body is gone.
fn pump(
    child: &Mutex<Child>,
    mut stdout: ChildStdout,
    mut stderr: File,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    what: &str,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                reap(&mut lock(child));
                let _ = tx.blocking_send(Err(io::Error::new(
                    err.kind(),
                    format!("{what}: reading the output: {err}"),
                )));
                return;
            }
        };
        // A copy of what was read, so that a short read does not hold a whole chunk.
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        if tx.blocking_send(Ok(chunk)).is_err() {
            // The body was dropped: nobody wants the rest.
            reap(&mut lock(child));
            return;
        }
    }
    // The child closed its stdout: it has exited or is exiting (or was killed by the body).
    let status = lock(child).wait();
    let failure = match status {
        Ok(status) if status.success() => return,
        Ok(status) => {
            let mut message = String::new();
            let _ = stderr.seek(SeekFrom::Start(0));
            let _ = (&mut stderr)
                .take(STDERR_QUOTE)
                .read_to_string(&mut message);
            format!("{what}: {status}: {}", message.trim())
        }
        Err(err) => format!("{what}: waiting for the child: {err}"),
    };
    // Unless the body is gone (then the failure is the kill it asked for).
    if tx
        .blocking_send(Err(io::Error::other(failure.clone())))
        .is_ok()
    {
        tracing::warn!("{failure}");
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::path::Path;

    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still has its /proc entry; only a reaped child has none.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    fn collect(mut piped: Piped) -> io::Result<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut out = Vec::new();
            while let Some(chunk) = poll_fn(|cx| piped.poll_chunk(cx)).await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        })
    }

    #[test]
    fn the_output_arrives_whole_and_the_child_is_reaped() {
        let mut command = Command::new("sh");
        command.args(["-c", "head -c 300000 /dev/zero; echo end"]);
        let piped = Piped::spawn(command, "test".into()).unwrap();
        let pid = lock(&piped.child).id();
        let out = collect(piped.first().unwrap()).unwrap();
        assert_eq!(out.len(), 300_004);
        assert!(out.ends_with(b"end\n"));
        // The thread reaps before it closes the channel, so by now the child is gone.
        assert!(!alive(pid));
    }

    #[test]
    fn a_failure_ends_the_output_with_the_childs_message() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf partial; echo broken >&2; exit 3"]);
        let piped = Piped::spawn(command, "making it".into()).unwrap();
        let err = collect(piped.first().unwrap()).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("making it: "), "{message}");
        assert!(
            message.contains('3') && message.ends_with("broken"),
            "{message}"
        );

        let mut command = Command::new("sh");
        command.args(["-c", "echo nothing >&2; exit 1"]);
        let piped = Piped::spawn(command, "at once".into()).unwrap();
        let err = piped.first().unwrap_err().to_string();
        assert!(err.ends_with("nothing"), "{err}");
    }

    #[test]
    fn dropping_the_body_kills_and_reaps_an_endless_child() {
        let piped = Piped::spawn(Command::new("yes"), "yes".into()).unwrap();
        let pid = lock(&piped.child).id();
        let piped = piped.first().unwrap();
        assert!(alive(pid));
        drop(piped);
        // The reaping thread runs on its own; wait for it (the test fails by hanging if the
        // child is never reaped, which `cargo test` reports).
        while alive(pid) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
