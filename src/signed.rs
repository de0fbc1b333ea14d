//! Signed release manifests: the one file that says which release a static site (or a
//! GitHub release asset) offers, signed with minisign's Ed25519 format.
//!
//! A site holds `manifest.json` (this module's [`ReleaseManifest`], as JSON) and
//! `manifest.json.minisig` (a minisign signature of those exact bytes), plus one object per
//! file content under [`object_path`]. Nothing in the manifest is trusted before
//! [`verify`] has checked its signature against a key of the device's config; then
//! [`ReleaseManifest::check_fresh`] refuses an expired one (a host that replays an old
//! manifest forever cannot freeze a device silently), and the updater refuses a counter
//! lower than the installed release's (a host that serves an older release cannot roll a
//! device back).
//!
//! Keys and signatures are minisign's, so `minisign -V` verifies what `ota publish` signs
//! and ota verifies what `minisign -S` signs.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::manifest::{Kind, ObjectId, Sha256, TreeEntry};

/// The [`ReleaseManifest::format`] of a manifest that lists every file inline: a release
/// record (`releases/<counter>.json`) and a GitHub release asset.
pub const FORMAT: &str = "ota-release/1";

/// The [`ReleaseManifest::format`] of a channel's `manifest.json` on a static site: the file
/// list is an object it names ([`ReleaseManifest::file_list`]), with the changes from
/// recent releases ([`ReleaseManifest::changes`]), so that an update reads metadata in
/// proportion to the change, not to the release.
pub const FORMAT_INDEX: &str = "ota-release/2";

/// The format of a change list object ([`ChangeList`]).
pub const CHANGES_FORMAT: &str = "ota-changes/1";

/// The largest `manifest.json` a device reads (a release of about 100,000 files).
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;

/// The largest `.minisig` file a device reads (a real one is about 300 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Where the manifest of `channel` lives, relative to the site's base URL: `manifest.json`
/// for `stable`, `channels/<name>/manifest.json` for any other channel. Its signature is
/// the same path with `.minisig` appended.
pub fn manifest_path(channel: &str) -> String {
    match channel {
        "stable" => "manifest.json".to_owned(),
        other => format!("channels/{other}/manifest.json"),
    }
}

/// Whether `name` can name a channel: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, starting with
/// a letter or digit (it becomes a folder of the site). `developer` is refused: on a static
/// site every channel is a channel of releases.
pub fn check_channel_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(
            "is not a channel name: use 1 to 64 of a-z, 0-9, `.`, `_` and `-`, \
                    starting with a letter or digit"
                .into(),
        );
    }
    if name == "developer" {
        return Err(
            "is the GitHub source's branch channel; a static site's channels are named \
                    by `ota publish --channel` (e.g. \"beta\")"
                .into(),
        );
    }
    Ok(())
}

/// Where the object holding content `sha256` lives, relative to the site's base URL:
/// `objects/<first two hex digits>/<64 hex digits>`, with `.zst` (or `.gz`) when stored
/// compressed.
pub fn object_path(sha256: &Sha256, encoding: Encoding) -> String {
    let hex = sha256.to_hex();
    let suffix = match encoding {
        Encoding::Identity => "",
        Encoding::Gzip => ".gz",
        Encoding::Zstd => ".zst",
    };
    format!("objects/{}/{hex}{suffix}", &hex[..2])
}

/// The largest zstd window (log2 of its bytes) `ota publish` compresses with and a device
/// decodes: 1 MiB, so that decoding an object takes about 1 MiB of memory whatever a
/// hostile host sends (a frame that asks for more is refused).
pub const ZSTD_WINDOW_LOG: u32 = 20;

/// Where the patch that turns content `from` into content `to` (SHA-256s) lives, relative
/// to the site's base URL: `patches/<first two hex digits of to>/<from>-<to>.zst`, an
/// `OTADELTA` patch ([`crate::delta`]) compressed with zstd (window at most
/// [`ZSTD_WINDOW_LOG`]).
pub fn patch_path(from: &Sha256, to: &Sha256) -> String {
    let to = to.to_hex();
    format!("patches/{}/{}-{to}.zst", &to[..2], from.to_hex())
}

/// Where the pack of the release whose file list has SHA-256 `list` lives, relative to the
/// site's base URL: `packs/<64 hex digits>.tar.gz`, a gzip tar of every file of the list
/// (symlinks excepted) under one top folder, read by a device that installs most of a
/// release in one request.
pub fn pack_path(list: &Sha256) -> String {
    format!("packs/{}.tar.gz", list.to_hex())
}

/// The signed description of one release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// Always [`FORMAT`]; anything else is refused.
    pub format: String,
    /// The channel this manifest is for (`stable`, or the name given to `ota publish`).
    pub channel: String,
    /// The release's name: the tag or ref published, or the name given to `ota publish`.
    pub release: String,
    /// The git commit the files came from; for a published folder, the git tree id of
    /// its files (so the same files always get the same id).
    pub commit: ObjectId,
    /// Increases with every manifest published to the site, across channels.
    pub counter: u64,
    /// When it was signed (RFC 3339, UTC).
    pub created: String,
    /// After this (RFC 3339, UTC) devices refuse it: the publisher must sign again before.
    pub expires: String,
    /// The share of devices (0–100) that take this release; absent means the device's own
    /// `[schedule] rollout_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
    /// Every file of the release, sorted by path (byte order), before any device-side
    /// filter ([`FORMAT`]; empty in [`FORMAT_INDEX`], where [`Self::file_list`] names them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ReleaseFile>,
    /// [`FORMAT_INDEX`]: the object holding the release's file list, the JSON array that
    /// [`FORMAT`] holds as `files` ([`file_list_bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_list: Option<ObjectRef>,
    /// [`FORMAT_INDEX`]: change lists ([`ChangeList`]) that turn the file list of a recent
    /// release of the channel into this one's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangeRef>,
    /// [`FORMAT_INDEX`]: the size in bytes of the release's pack ([`pack_path`] of the file
    /// list's SHA-256), when the site has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_size: Option<u64>,
    /// [`FORMAT_INDEX`]: binary patches to this release's changed files from their content
    /// in the channel's recent releases ([`patch_path`]), each kept only when smaller than
    /// the file's own object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<PatchRef>,
}

/// A binary patch the site has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRef {
    /// The SHA-256 of the old content it applies to.
    pub from: Sha256,
    /// The SHA-256 of the content it makes.
    pub to: Sha256,
    /// The patch object's size in bytes (compressed).
    pub size: u64,
}

/// An object of the site that holds metadata (a file list, a change list): named, like a
/// file's object, by the SHA-256 of its content, which the signed manifest gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The content's SHA-256; also the object's name.
    pub sha256: Sha256,
    /// The content's size in bytes.
    pub size: u64,
    /// How the object is stored.
    #[serde(default, skip_serializing_if = "Encoding::is_identity")]
    pub encoding: Encoding,
    /// The object's size in bytes when it is stored compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
}

/// Where the change list from an older release's file list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRef {
    /// The SHA-256 of the older release's file list ([`file_list_bytes`]).
    pub from: Sha256,
    /// The change list's object.
    pub object: ObjectRef,
}

/// What changed between two file lists: applied to the list whose SHA-256 is `from`, it
/// gives the list whose SHA-256 is `to` ([`ChangeList::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeList {
    /// Always [`CHANGES_FORMAT`].
    pub format: String,
    /// The SHA-256 of the file list it applies to.
    pub from: Sha256,
    /// The SHA-256 of the file list it gives.
    pub to: Sha256,
    /// Files added or changed in any field (content, kind, storage), sorted by path.
    pub files: Vec<ReleaseFile>,
    /// Paths removed, sorted.
    pub deleted: Vec<String>,
}

/// The bytes of a file list as the site stores it, and as its SHA-256 is taken: the JSON
/// array of `files` (sorted by path), compact. Both sides make them with this function.
pub fn file_list_bytes(files: &[ReleaseFile]) -> Vec<u8> {
    // Serialising plain structs of strings and numbers into memory cannot fail.
    serde_json::to_vec(files).unwrap_or_default()
}

impl ChangeList {
    /// The change from the file list `old` to `new` (each sorted by path).
    pub fn between(old: &[ReleaseFile], new: &[ReleaseFile]) -> ChangeList {
        let before: std::collections::HashMap<&str, &ReleaseFile> =
            old.iter().map(|f| (f.path.as_str(), f)).collect();
        let after: std::collections::HashSet<&str> = new.iter().map(|f| f.path.as_str()).collect();
        ChangeList {
            format: CHANGES_FORMAT.to_owned(),
            from: Sha256::of(&file_list_bytes(old)),
            to: Sha256::of(&file_list_bytes(new)),
            files: (new.iter())
                .filter(|f| before.get(f.path.as_str()) != Some(f))
                .cloned()
                .collect(),
            deleted: (old.iter())
                .filter(|f| !after.contains(f.path.as_str()))
                .map(|f| f.path.clone())
                .collect(),
        }
    }

    /// Parses a change list whose bytes matched the digest a signed manifest gives.
    pub fn parse(bytes: &[u8]) -> Result<ChangeList, Refusal> {
        let changes: ChangeList = serde_json::from_slice(bytes)
            .map_err(|e| Refusal::BadManifest(format!("a change list is unreadable: {e}")))?;
        if changes.format != CHANGES_FORMAT {
            return Err(Refusal::BadManifest(format!(
                "a change list's format is {:?}, and this ota reads {CHANGES_FORMAT:?}",
                changes.format
            )));
        }
        Ok(changes)
    }

    /// The file list `old` (whose SHA-256 is [`ChangeList::from`]) with the changes
    /// applied, as [`file_list_bytes`]; the caller checks its SHA-256.
    pub fn apply(&self, old: Vec<ReleaseFile>) -> Vec<u8> {
        let mut by_path: std::collections::BTreeMap<String, ReleaseFile> =
            old.into_iter().map(|f| (f.path.clone(), f)).collect();
        for path in &self.deleted {
            by_path.remove(path);
        }
        for file in &self.files {
            by_path.insert(file.path.clone(), file.clone());
        }
        // A BTreeMap of `String`s iterates in byte order: the list's order.
        file_list_bytes(&by_path.into_values().collect::<Vec<_>>())
    }
}

/// One file of a signed release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFile {
    /// Path inside the release, `/`-separated (validated by the device like a tree path).
    pub path: String,
    /// File, executable or symlink (whose content is the link target).
    pub kind: Kind,
    /// Size of the content in bytes.
    pub size: u64,
    /// The content's git blob id.
    pub blob: ObjectId,
    /// The content's SHA-256; also the object's name.
    pub sha256: Sha256,
    /// How the object is stored.
    #[serde(default, skip_serializing_if = "Encoding::is_identity")]
    pub encoding: Encoding,
    /// The object's size in bytes when it is stored compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
}

/// How an object is stored on the site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The content as it is.
    #[default]
    Identity,
    /// The content compressed with gzip (RFC 1952): what `ota publish` wrote before zstd.
    Gzip,
    /// The content compressed with zstd (RFC 8878), one frame, its window at most
    /// [`ZSTD_WINDOW_LOG`].
    Zstd,
}

impl Encoding {
    pub(crate) fn is_identity(&self) -> bool {
        *self == Encoding::Identity
    }
}

impl ReleaseManifest {
    /// Parses a manifest whose signature was verified; refuses another format, and a
    /// manifest whose fields do not fit its format.
    pub fn parse(bytes: &[u8]) -> Result<ReleaseManifest, Refusal> {
        let manifest: ReleaseManifest = serde_json::from_slice(bytes)
            .map_err(|e| Refusal::BadManifest(format!("it is not a release manifest: {e}")))?;
        let misfit = match manifest.format.as_str() {
            FORMAT => {
                let inline = manifest.file_list.is_none()
                    && manifest.changes.is_empty()
                    && manifest.pack_size.is_none()
                    && manifest.patches.is_empty();
                (!inline).then_some(
                    "inline only, with no `file_list`, `changes`, `pack_size` or `patches`",
                )
            }
            FORMAT_INDEX => {
                let listed = manifest.file_list.is_some() && manifest.files.is_empty();
                (!listed).then_some("in a `file_list` object only")
            }
            other => {
                return Err(Refusal::BadManifest(format!(
                    "its format is {other:?}, and this ota reads {FORMAT:?} and \
                     {FORMAT_INDEX:?}: update ota on this device"
                )));
            }
        };
        if let Some(how) = misfit {
            return Err(Refusal::BadManifest(format!(
                "a manifest of format {:?} lists its files {how}",
                manifest.format
            )));
        }
        Ok(manifest)
    }

    /// The release's files as a tree (with their SHA-256), as a source answers `tree`:
    /// the inline `files` (a [`FORMAT_INDEX`] manifest's are put there once its file list
    /// is read).
    pub(crate) fn tree(&self) -> Vec<TreeEntry> {
        let mode = |kind| match kind {
            Kind::File => 0o100644,
            Kind::Executable => 0o100755,
            Kind::Symlink => 0o120000,
        };
        let entry = |f: &ReleaseFile| TreeEntry {
            path: f.path.clone(),
            mode: mode(f.kind),
            id: f.blob,
            size: Some(f.size),
            sha256: Some(f.sha256),
        };
        self.files.iter().map(entry).collect()
    }

    /// Refuses a manifest whose `expires` is before `now` (a freeze attack, or a publisher
    /// who stopped re-signing), or whose times are not RFC 3339.
    pub fn check_fresh(&self, now: jiff::Timestamp) -> Result<(), Refusal> {
        let expires: jiff::Timestamp = self.expires.parse().map_err(|e| {
            Refusal::BadManifest(format!(
                "`expires` {:?} is not an RFC 3339 time: {e}",
                self.expires
            ))
        })?;
        if expires < now {
            return Err(Refusal::Expired {
                expires: self.expires.clone(),
            });
        }
        Ok(())
    }
}

/// The public keys a device trusts. Several may be trusted at once, to rotate keys: sign
/// with the new key only once every device trusts it.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<minisign::PublicKey>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl TrustedKeys {
    /// No keys: nothing is verified.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds one key, written as minisign writes it: the base64 line alone (`RW…`), or a
    /// whole `.pub` file (an `untrusted comment:` line, then the base64 line).
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| "holds no public key".to_owned())?;
        let key = minisign::PublicKey::from_base64(line).map_err(|_| {
            format!(
                "{:?} is not a minisign public key (it starts with `RW` and has 56 base64 \
                 characters: the second line of `ota.pub`)",
                shorten(line)
            )
        })?;
        if !self.keys.iter().any(|k| k.keynum() == key.keynum()) {
            self.keys.push(key);
        }
        Ok(())
    }

    /// The key ids, as minisign prints them (16 uppercase hex digits).
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| key_id(k.keynum())).collect()
    }
}

/// Verifies that `signature` (a `.minisig` file) signs exactly `manifest` with one of
/// `keys`.
pub fn verify(keys: &TrustedKeys, manifest: &[u8], signature: &[u8]) -> Result<(), Refusal> {
    let text = std::str::from_utf8(signature)
        .map_err(|_| Refusal::BadSignature("the signature file is not text".into()))?;
    let signature = minisign::SignatureBox::from_string(text)
        .map_err(|e| Refusal::BadSignature(format!("it is not a minisign signature: {e}")))?;
    let id = signature.keynum();
    let Some(key) = keys.keys.iter().find(|k| k.keynum() == id) else {
        return Err(Refusal::UntrustedKey {
            key_id: key_id(id),
            trusted: keys.ids(),
        });
    };
    minisign::verify(key, &signature, Cursor::new(manifest), true, false, true)
        .map_err(|e| Refusal::BadSignature(e.to_string()))
}

fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Why a release was refused before anything of it was installed. [`Refusal::kind`] is the
/// stable name written to `last_error.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host has no signature for the manifest.
    #[error(
        "the release has no signature (`manifest.json.minisig`): publish it with `ota publish`, \
         which signs it; a device with a `public_key` installs signed releases only (with \
         `manifest_key` instead: the original `manifest.json` asset with its `signature`)"
    )]
    MissingSignature,
    /// The signature does not verify, or is not a signature.
    #[error(
        "its signature does not verify ({0}): the manifest was altered after it was signed, or \
         the signature is not its own; publish it again"
    )]
    BadSignature(String),
    /// Signed by a key the device does not trust.
    #[error(
        "it is signed by key {key_id}, which this device does not trust (trusted: {}): add that \
         key's `ota.pub` to `public_key` in [source], or sign with a trusted key",
        trusted.join(", ")
    )]
    UntrustedKey {
        /// The signature's key id.
        key_id: String,
        /// The ids of the keys trusted.
        trusted: Vec<String>,
    },
    /// Past its `expires` time.
    #[error(
        "its manifest expired at {expires}: the host may be replaying an old manifest to keep \
         this device on it (a freeze attack), or the publisher stopped signing; publish again \
         (`ota publish` signs a new expiry)"
    )]
    Expired {
        /// When it expired.
        expires: String,
    },
    /// A counter lower than the installed release's.
    #[error(
        "its manifest counter is {offered}, lower than {installed} of the installed release: \
         the host may be serving an older release to roll this device back; if that is \
         wanted, set `allow_downgrade = true` in [source]"
    )]
    Downgrade {
        /// The installed release's counter.
        installed: u64,
        /// The offered release's counter.
        offered: u64,
    },
    /// The manifest lists an object the host does not have.
    #[error(
        "the host has no object for {path} ({object} answered 404): the site is incomplete; \
         publish again, and copy `objects/` before `manifest.json` when mirroring"
    )]
    MissingObject {
        /// The file.
        path: String,
        /// The object's path on the site.
        object: String,
    },
    /// A manifest that cannot be read, or that contradicts the release.
    #[error("its manifest is unusable: {0}")]
    BadManifest(String),
}

impl Refusal {
    /// The stable name of this refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::MissingSignature => "missing_signature",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::UntrustedKey { .. } => "untrusted_key",
            Refusal::Expired { .. } => "expired",
            Refusal::Downgrade { .. } => "downgrade",
            Refusal::MissingObject { .. } => "missing_object",
            Refusal::BadManifest(_) => "bad_manifest",
        }
    }
}

/// A secret key loaded to sign manifests (`ota publish`), in minisign's format.
pub struct SigningKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id())
    }
}

/// A new key pair, as `ota keygen` writes it.
pub struct NewKey {
    /// The secret key file's text (`ota.key`): minisign's secret key format, encrypted with
    /// scrypt when a password was given.
    pub secret_file: String,
    /// The public key file's text (`ota.pub`).
    pub public_file: String,
    /// The public key's base64 line (`RW…`): the value of `public_key` in a device config.
    pub public_key: String,
    /// The key id (16 uppercase hex digits), as minisign prints it.
    pub id: String,
}

/// A secret key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key is password-protected and no password was given.
    #[error(
        "the secret key is password-protected: give its password with --password-file FILE \
         or --password-env VAR (or run on a terminal to be asked)"
    )]
    NeedsPassword,
    /// The password does not decrypt the key.
    #[error(
        "the password does not decrypt the secret key ({0}): give the password it was made with"
    )]
    WrongPassword(String),
    /// Not a minisign secret key.
    #[error(
        "it is not a minisign secret key ({0}): give the `ota.key` written by `ota keygen` \
         (or a key made by `minisign -G`)"
    )]
    NotAKey(String),
    /// The key could not be created or used.
    #[error("the key cannot be used: {0}")]
    Crypto(String),
}

/// Makes a new Ed25519 key pair; with `password`, the secret key is encrypted with it
/// (scrypt, as minisign does); without, it is stored unencrypted (as `minisign -G -W`).
pub fn generate_key(password: Option<&str>) -> Result<NewKey, KeyError> {
    let crypto = |e: minisign::PError| KeyError::Crypto(e.to_string());
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password.into())),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(crypto)?;
    let id = key_id(pair.pk.keynum());
    let comment = match password {
        Some(_) => format!("ota secret key {id} (password-protected)"),
        None => format!("ota secret key {id}"),
    };
    Ok(NewKey {
        secret_file: pair
            .sk
            .to_box(Some(&comment))
            .map_err(crypto)?
            .into_string(),
        public_file: pair.pk.to_box().map_err(crypto)?.into_string(),
        public_key: pair.pk.to_base64(),
        id,
    })
}

/// Length of a minisign secret key, decoded: algorithm, KDF and checksum algorithm (2 bytes
/// each), KDF salt (32), KDF limits (8 + 8), key id (8), Ed25519 key (64), checksum (32).
const SECRET_KEY_BYTES: usize = 158;

/// The decoded bytes of a secret key file (its second line, base64).
fn secret_key_bytes(text: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| KeyError::NotAKey("the file holds no key".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .map_err(|e| KeyError::NotAKey(format!("its key line is not base64: {e}")))?;
    if bytes.len() != SECRET_KEY_BYTES || &bytes[..2] != b"Ed" {
        return Err(KeyError::NotAKey(
            "its key line is not an Ed25519 secret key".into(),
        ));
    }
    Ok(bytes)
}

/// Whether the secret key file `text` is password-protected (its key derivation algorithm
/// is set). Not a key at all: `false`, and [`load_secret_key`] says what is wrong.
pub fn secret_key_is_encrypted(text: &str) -> bool {
    secret_key_bytes(text).is_ok_and(|bytes| bytes[2..4] != [0, 0])
}

/// Loads a secret key file's text (`ota.key`, or a key made by `minisign -G`, with or
/// without `-W`), decrypting it with `password` when it is password-protected. Never
/// prompts: the caller asks.
pub fn load_secret_key(text: &str, password: Option<&str>) -> Result<SigningKey, KeyError> {
    let bytes = secret_key_bytes(text)?;
    let secret = if bytes[2..4] != [0, 0] {
        let password = password.ok_or(KeyError::NeedsPassword)?;
        minisign::SecretKeyBox::from_string(text)
            .and_then(|boxed| boxed.into_secret_key(Some(password.to_owned())))
            .map_err(|e| KeyError::WrongPassword(e.to_string()))?
    } else if bytes[126..].iter().all(|b| *b == 0) {
        // `minisign -G -W` (0.11) leaves the checksum of an unencrypted key empty, and the
        // crate's loader refuses it. Signing checks the key all the same: each signature
        // is verified with the public half of the key before it is returned.
        minisign::SecretKey::from_bytes(&bytes).map_err(|e| KeyError::NotAKey(e.to_string()))?
    } else {
        minisign::SecretKeyBox::from_string(text)
            .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
            .map_err(|e| KeyError::NotAKey(e.to_string()))?
    };
    let public = minisign::PublicKey::from_secret_key(&secret)
        .map_err(|e| KeyError::NotAKey(e.to_string()))?;
    let key = SigningKey { secret, public };
    // A damaged key fails here, not at the first publish's last step.
    key.sign(b"ota", "check")?;
    Ok(key)
}

impl SigningKey {
    /// The key id (16 uppercase hex digits), as minisign prints it.
    pub fn id(&self) -> String {
        key_id(self.public.keynum())
    }

    /// The public key's base64 line (`RW…`).
    pub fn public_key(&self) -> String {
        self.public.to_base64()
    }

    /// Signs `bytes`: returns the `.minisig` file's text. `trusted_comment` (one line; any
    /// control character is replaced by a space) is signed too, and `minisign -V` prints it.
    pub fn sign(&self, bytes: &[u8], trusted_comment: &str) -> Result<String, KeyError> {
        let comment: String = trusted_comment
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let untrusted = format!("signature from ota secret key {}", self.id());
        let signature = minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(bytes),
            Some(&comment),
            Some(&untrusted),
        )
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(signature.into_string())
    }
}

#[cfg(test)]
mod signing_tests {
    use super::*;

    #[test]
    fn what_a_new_key_signs_verifies_with_its_public_key_only() {
        let key = generate_key(None).unwrap();
        let signer = load_secret_key(&key.secret_file, None).unwrap();
        assert_eq!(signer.id(), key.id);
        assert_eq!(signer.public_key(), key.public_key);
        let signature = signer
            .sign(b"manifest", "ota release v1\ncounter 1")
            .unwrap();
        // The trusted comment stays one line, whatever it was given.
        assert!(
            signature.contains("trusted comment: ota release v1 counter 1\n"),
            "{signature}"
        );
        let mut keys = TrustedKeys::default();
        keys.add(&key.public_file).unwrap();
        verify(&keys, b"manifest", signature.as_bytes()).unwrap();
        let altered = verify(&keys, b"manifesT", signature.as_bytes()).unwrap_err();
        assert_eq!(altered.kind(), "bad_signature");
        let mut others = TrustedKeys::default();
        others.add(&generate_key(None).unwrap().public_key).unwrap();
        let untrusted = verify(&others, b"manifest", signature.as_bytes()).unwrap_err();
        assert_eq!(untrusted.kind(), "untrusted_key");
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let key = generate_key(Some("pw")).unwrap();
        assert!(secret_key_is_encrypted(&key.secret_file));
        assert!(matches!(
            load_secret_key(&key.secret_file, None),
            Err(KeyError::NeedsPassword)
        ));
        assert!(matches!(
            load_secret_key(&key.secret_file, Some("wrong")),
            Err(KeyError::WrongPassword(_))
        ));
        let signer = load_secret_key(&key.secret_file, Some("pw")).unwrap();
        assert_eq!(signer.id(), key.id);
        assert!(matches!(
            load_secret_key("untrusted comment: x\nnot a key\n", None),
            Err(KeyError::NotAKey(_))
        ));
    }

    fn listed(path: &str, content: &[u8], kind: Kind) -> ReleaseFile {
        ReleaseFile {
            path: path.into(),
            kind,
            size: content.len() as u64,
            blob: ObjectId::for_blob(content),
            sha256: Sha256::of(content),
            encoding: Encoding::Identity,
            stored_size: None,
        }
    }

    #[test]
    fn a_change_list_turns_the_old_file_list_into_the_new_one() {
        let old = vec![
            listed("a.py", b"a", Kind::File),
            listed("b/c.py", b"c", Kind::File),
            listed("b/d.sh", b"d", Kind::File),
            listed("gone.txt", b"g", Kind::File),
        ];
        let new = vec![
            listed("a.py", b"a", Kind::File),
            // Byte order: `b-x` sorts before `b/…`, as a path list is sorted.
            listed("b-x.py", b"x", Kind::File),
            listed("b/c.py", b"c2", Kind::File),
            listed("b/d.sh", b"d", Kind::Executable),
        ];
        let change = ChangeList::between(&old, &new);
        let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b-x.py", "b/c.py", "b/d.sh"]);
        assert_eq!(change.deleted, ["gone.txt"]);
        assert_eq!(change.from, Sha256::of(&file_list_bytes(&old)));
        let applied = change.apply(old);
        assert_eq!(applied, file_list_bytes(&new));
        assert_eq!(Sha256::of(&applied), change.to);
        // Through JSON, as a device reads it.
        let bytes = serde_json::to_vec(&change).unwrap();
        assert_eq!(ChangeList::parse(&bytes).unwrap(), change);
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace(CHANGES_FORMAT, "ota-changes/9");
        assert_eq!(
            ChangeList::parse(other.as_bytes()).unwrap_err().kind(),
            "bad_manifest"
        );
    }

    #[test]
    fn a_manifest_lists_its_files_one_way_per_format() {
        let manifest = |format: &str, inline: bool, list: bool| {
            let object = ObjectRef {
                sha256: Sha256::of(b"[]"),
                size: 2,
                encoding: Encoding::Identity,
                stored_size: None,
            };
            serde_json::to_vec(&ReleaseManifest {
                format: format.into(),
                channel: "stable".into(),
                release: "v1".into(),
                commit: ObjectId::for_blob(b"c"),
                counter: 1,
                created: "2026-01-01T00:00:00Z".into(),
                expires: "2999-01-01T00:00:00Z".into(),
                rollout_percent: None,
                files: match inline {
                    true => vec![listed("a", b"a", Kind::File)],
                    false => Vec::new(),
                },
                file_list: list.then_some(object),
                changes: Vec::new(),
                pack_size: None,
                patches: Vec::new(),
            })
            .unwrap()
        };
        assert!(ReleaseManifest::parse(&manifest(FORMAT, true, false)).is_ok());
        assert!(ReleaseManifest::parse(&manifest(FORMAT_INDEX, false, true)).is_ok());
        for (format, inline, list) in [
            (FORMAT, true, true),
            (FORMAT, false, true),
            (FORMAT_INDEX, true, true),
            (FORMAT_INDEX, false, false),
            ("ota-release/3", false, true),
        ] {
            let refused = ReleaseManifest::parse(&manifest(format, inline, list)).unwrap_err();
            assert_eq!(refused.kind(), "bad_manifest", "{format} {inline} {list}");
        }
    }
}
