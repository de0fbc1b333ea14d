//! `ota keygen`: a new signing key pair, written as minisign writes one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::PublishError;
use crate::signed;

/// What `ota keygen` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct KeygenReport {
    /// The key id (16 uppercase hex digits), as minisign prints it.
    pub key_id: String,
    /// The secret key file (mode 0600).
    pub secret_key_file: PathBuf,
    /// The public key file.
    pub public_key_file: PathBuf,
    /// The public key's base64 line: the value of `public_key` in a device's `[source]`.
    pub public_key: String,
    /// Whether the secret key is password-protected.
    pub encrypted: bool,
}

/// Writes `dir/ota.key` (secret, mode 0600, encrypted with `password` if given) and
/// `dir/ota.pub`. Refuses to replace either file unless `force`.
pub fn keygen(
    dir: &Path,
    password: Option<&str>,
    force: bool,
) -> Result<KeygenReport, PublishError> {
    fs::create_dir_all(dir).map_err(|e| PublishError::io(dir, "create", e))?;
    let secret_path = dir.join("ota.key");
    let public_path = dir.join("ota.pub");
    if !force {
        for path in [&secret_path, &public_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(PublishError::Usage(format!(
                    "{} exists: ota keygen does not replace a key (devices trust the old \
                     one); give another --out, or --force to replace it",
                    path.display()
                )));
            }
        }
    }
    let key = signed::generate_key(password)?;
    write_new(&secret_path, key.secret_file.as_bytes(), 0o600, force)?;
    write_new(&public_path, key.public_file.as_bytes(), 0o644, force)?;
    Ok(KeygenReport {
        key_id: key.id,
        secret_key_file: secret_path,
        public_key_file: public_path,
        public_key: key.public_key,
        encrypted: password.is_some(),
    })
}

/// Writes a file created with `mode` that must not exist yet (`O_EXCL`): two runs never
/// mix their keys. With `force`, an existing file is first removed.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), PublishError> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PublishError::io(path, "replace", e)),
        }
    }
    let failed = |e| PublishError::io(path, "write", e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}
