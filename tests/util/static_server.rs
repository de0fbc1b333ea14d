//! A plain static file server: Python's `http.server`, which sends `Last-Modified` (and
//! answers `If-Modified-Since` with 304) but no `ETag` and no `Range`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::nginx::{free_port, wait_for};

/// A running `python3 -m http.server`; killed on drop.
pub struct PlainServer {
    child: Child,
    port: u16,
}

impl PlainServer {
    pub fn serve(site: &Path) -> PlainServer {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(site)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed");
        wait_for(port, "python3 -m http.server", &String::new);
        PlainServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
