//! The real nginx (Debian's `nginx-light`), started by a test as its own child process on a
//! free loopback port, serving a site folder with `ETag`, `Last-Modified` and `Range`.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running nginx; killed on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

/// A free port on 127.0.0.1 (free when asked: the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
pub fn wait_for(port: u16, what: &str, log: &dyn Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start on port {port}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Nginx {
    /// Serves `site` on a free loopback port.
    pub fn serve(site: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = dir.path();
        // As root, nginx's workers would run as `nobody`; keep them the test's user.
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}worker_processes 1;\n\
             error_log {p}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log {p}/access.log;\n\
               client_body_temp_path {p}/body;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               types {{ application/json json; }}\n\
               default_type application/octet-stream;\n\
               keepalive_requests 100000;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {site};\n\
               }}\n\
             }}\n",
            p = p.display(),
            site = site.display(),
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let global = format!("daemon off; pid {}/nginx.pid;", p.display());
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", &global])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (Debian: apt-get install nginx-light)");
        let log = p.join("error.log");
        wait_for(port, "nginx", &|| {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines served so far (`GET /manifest.json HTTP/1.1`), from the access
    /// log, with their status codes appended (`… 304`).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once('"')?;
                let (request, rest) = rest.split_once('"')?;
                let status = rest.split_whitespace().next()?;
                Some(format!("{request} {status}"))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A fast shutdown (SIGTERM) stops the master and its worker; SIGKILL would leave the
        // worker behind.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
