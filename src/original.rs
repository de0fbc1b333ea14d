//! The original MicroPython updater's release manifest: a `manifest.json` release asset.
//!
//! ```json
//! {"deletes":["old.py"],"files":[{"crc32":…,"path":"main.py","sha256":"…","size":12}],
//!  "post_update":"migrate","signature":"…","version":"1.2.0"}
//! ```
//!
//! Its `signature` is the lowercase hex HMAC-SHA256, with a key shared by the publisher and
//! every device (`manifest_key`), of the manifest without `signature` serialised as Python's
//! `json.dumps(m, sort_keys=True, separators=(",", ":"))`: keys sorted by code point at every
//! level, no spaces, every character outside printable ASCII escaped as `\uXXXX` (non-BMP
//! characters as a surrogate pair). [`canonical`] reproduces those bytes exactly from the
//! parsed JSON, and refuses what it cannot reproduce (a float: Python prints them its own
//! way), so that a manifest signed by the original's generator verifies here.
//!
//! Nothing here decides what is installed: the GitHub source turns a parsed manifest into
//! the release's file list (see `source::github`).

use std::collections::HashSet;
use std::fmt::Write as _;

use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::manifest::{RelPath, Sha256};
use crate::signed::Refusal;
use crate::state::MAX_POST_UPDATE;

/// The largest original `manifest.json` read (about 100,000 files).
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A parsed original manifest. Its signature is not checked by [`OriginalManifest::parse`]:
/// call [`OriginalManifest::verify`] with the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalManifest {
    /// The release's files, as listed.
    pub files: Vec<OriginalFile>,
    /// `deletes`: paths the publisher wants gone.
    pub deletes: Vec<String>,
    /// `version`: shown in logs, never used to decide what is installed.
    pub version: Option<String>,
    /// `post_update`: a name the device's `[after_update] post_update` may map to a command.
    pub post_update: Option<String>,
    /// `signature`, as written.
    pub signature: Option<String>,
    /// The bytes the signature covers (see [`canonical`]).
    signed_bytes: Vec<u8>,
}

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalFile {
    /// Path inside the release.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256,
    /// CRC-32 (IEEE) of the content, when listed. Redundant next to `sha256`, which is
    /// verified while downloading: ota does not check it against the content.
    pub crc32: Option<u32>,
}

impl OriginalManifest {
    /// Parses `bytes`: refuses a manifest that is not JSON, lacks `files`, names an invalid or
    /// duplicate path, or whose `post_update` is not a plain name of at most
    /// [`MAX_POST_UPDATE`] bytes. Paths are checked like tree paths (the updater checks the
    /// resulting tree against ota's own folders as well).
    pub fn parse(bytes: &[u8]) -> Result<OriginalManifest, Refusal> {
        let bad = |m: String| Refusal::BadManifest(m);
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "it is {} bytes, more than the {MAX_MANIFEST_BYTES} bytes read",
                bytes.len()
            )));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("it is not JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(bad("it is not a JSON object".into()));
        };
        let signature = match map.remove("signature") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(bad("`signature` is not a string".into())),
        };
        let signed_bytes = canonical(&Value::Object(map.clone())).map_err(bad)?;
        let files = match map.get("files") {
            Some(Value::Array(files)) => files,
            _ => return Err(bad("it has no `files` list".into())),
        };
        let mut seen = HashSet::new();
        let files = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let file = OriginalFile::parse(f).map_err(|m| bad(format!("`files[{i}]` {m}")))?;
                if !seen.insert(file.path.clone()) {
                    return Err(bad(format!("`files` lists {:?} twice", file.path)));
                }
                Ok(file)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let deletes = match map.get("deletes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Value::String(path) => check_path(path)
                        .map(|()| path.clone())
                        .map_err(|m| bad(format!("`deletes[{i}]` {m}"))),
                    _ => Err(bad(format!("`deletes[{i}]` is not a string"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("`deletes` is not a list".into())),
        };
        if let Some(both) = deletes.iter().find(|d| seen.contains(*d)) {
            return Err(bad(format!("{both:?} is both in `files` and in `deletes`")));
        }
        let version = match map.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.clone()),
            // The original's generator writes what it is given; a number is shown as written.
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(bad("`version` is not a string".into())),
        };
        let post_update = match map.get("post_update") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                check_post_update(name).map_err(|m| bad(format!("`post_update` {m}")))?;
                Some(name.clone())
            }
            Some(_) => return Err(bad("`post_update` is not a string".into())),
        };
        Ok(OriginalManifest {
            files,
            deletes,
            version,
            post_update,
            signature,
            signed_bytes,
        })
    }

    /// The bytes `signature` covers: the manifest without `signature`, canonical.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }

    /// Checks `signature` against the HMAC-SHA256 of the signed bytes with `key`, in
    /// constant time.
    pub fn verify(&self, key: &[u8]) -> Result<(), Refusal> {
        let Some(signature) = &self.signature else {
            return Err(Refusal::MissingSignature);
        };
        let given = hex::decode(signature).map_err(|_| {
            Refusal::BadSignature("`signature` is not hex (a HMAC-SHA256 in hex)".into())
        })?;
        let mut mac = hmac_with(key);
        mac.update(&self.signed_bytes);
        mac.verify_slice(&given).map_err(|_| {
            Refusal::BadSignature(
                "it is not the HMAC-SHA256 of the manifest with this device's `manifest_key`"
                    .into(),
            )
        })
    }
}

impl OriginalFile {
    fn parse(value: &Value) -> Result<OriginalFile, String> {
        let Value::Object(map) = value else {
            return Err("is not an object".into());
        };
        let path = match map.get("path") {
            Some(Value::String(path)) => path.clone(),
            _ => return Err("has no `path` string".into()),
        };
        check_path(&path).map_err(|m| format!("({path:?}) {m}"))?;
        let size = map
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("({path:?}) has no `size` (a whole number of bytes)"))?;
        let sha256 = map
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(Sha256::from_hex)
            .ok_or_else(|| format!("({path:?}) has no `sha256` (64 hex digits)"))?;
        let crc32 = match map.get("crc32") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("({path:?}) has a `crc32` that is not a CRC-32"))?,
            ),
        };
        Ok(OriginalFile {
            path,
            size,
            sha256,
            crc32,
        })
    }
}

fn check_path(path: &str) -> Result<(), String> {
    RelPath::new(path, &[])
        .map(|_| ())
        .map_err(|e| format!("is not a valid path: {e}"))
}

/// Whether `name` can be a `post_update` name: 1 to [`MAX_POST_UPDATE`] bytes of letters,
/// digits, `.`, `_`, `-` (a name to look up in the config, never a command).
pub fn check_post_update(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= MAX_POST_UPDATE
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    match plain {
        true => Ok(()),
        false => Err(format!(
            "{:?} is not a plain name: use 1 to {MAX_POST_UPDATE} of a-z, A-Z, 0-9, `.`, `_` \
             and `-`",
            name.chars().take(60).collect::<String>()
        )),
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

impl OriginalFile {
    /// The entry for `path` holding `content`.
    pub fn of(path: impl Into<String>, content: &[u8]) -> OriginalFile {
        OriginalFile {
            path: path.into(),
            size: content.len() as u64,
            sha256: Sha256::of(content),
            crc32: Some(crc32fast::hash(content)),
        }
    }

    /// The entry for `path`, its content streamed from `reader` (constant memory).
    pub fn read(
        path: impl Into<String>,
        reader: &mut dyn std::io::Read,
    ) -> std::io::Result<OriginalFile> {
        use sha2::Digest;
        let (mut sha, mut crc, mut size) = (sha2::Sha256::new(), crc32fast::Hasher::new(), 0u64);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            crc.update(&buf[..n]);
            size += n as u64;
        }
        Ok(OriginalFile {
            path: path.into(),
            size,
            sha256: Sha256::from_bytes(sha.finalize().into()),
            crc32: Some(crc.finalize()),
        })
    }
}

/// The original manifest listing `files` (sorted by path here, as the original's generator
/// does), with `deletes`, `version` and `post_update` when given, signed with `key` when
/// given: the bytes to upload as the release asset `manifest.json` (what
/// `ota publish --format original` writes).
pub fn render(
    files: &[OriginalFile],
    deletes: &[String],
    version: Option<&str>,
    post_update: Option<&str>,
    key: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&OriginalFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let list = sorted
        .iter()
        .map(|f| {
            let mut entry = serde_json::json!({
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256.to_hex(),
            });
            if let Some(crc) = f.crc32 {
                entry["crc32"] = crc.into();
            }
            entry
        })
        .collect::<Vec<_>>();
    let mut map = serde_json::Map::new();
    map.insert("files".into(), Value::Array(list));
    map.insert("deletes".into(), serde_json::json!(deletes));
    if let Some(version) = version {
        map.insert("version".into(), Value::String(version.to_owned()));
    }
    if let Some(name) = post_update {
        check_post_update(name).map_err(|m| format!("`post_update` {m}"))?;
        map.insert("post_update".into(), Value::String(name.to_owned()));
    }
    if let Some(key) = key {
        let mut mac = hmac_with(key);
        mac.update(&canonical(&Value::Object(map.clone()))?);
        let signature = hex::encode(mac.finalize().into_bytes());
        map.insert("signature".into(), Value::String(signature));
    }
    canonical(&Value::Object(map))
}

/// `value` serialised exactly as Python's `json.dumps(value, sort_keys=True,
/// separators=(",", ":"))` does (with its default `ensure_ascii=True`); refuses a
/// non-integer number, whose text Python chooses its own way.
pub fn canonical(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out.into_bytes())
}

fn write_value(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => write!(out, "{u}").unwrap_or(()),
            (None, Some(i)) => write!(out, "{i}").unwrap_or(()),
            (None, None) => {
                return Err(format!(
                    "it holds the number {n}, which is not a whole number of at most 64 bits: \
                     its signature cannot be checked (Python writes such numbers its own way)"
                ));
            }
        },
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Python sorts str keys by code point, which is the UTF-8 byte order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string as Python's `ensure_ascii` writes it.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").unwrap_or(());
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: Value) -> String {
        String::from_utf8(canonical(&value).unwrap()).unwrap()
    }

    #[test]
    fn canonical_matches_pythons_json_dumps() {
        // Expected strings from Python 3: json.dumps(v, sort_keys=True, separators=(",",":")).
        assert_eq!(
            text(serde_json::json!({"b": [1, -2, true, null], "a": {"z": "x", "B": ""}})),
            r#"{"a":{"B":"","z":"x"},"b":[1,-2,true,null]}"#
        );
        assert_eq!(
            text(serde_json::json!(
                "é\u{1F600}\"\\/\n\r\t\u{8}\u{c}\u{1}\u{7f}~"
            )),
            r#""\u00e9\ud83d\ude00\"\\/\n\r\t\b\f\u0001\u007f~""#
        );
        // Keys sort by code point: "Z" < "a" < "é" < "😀".
        assert_eq!(
            text(serde_json::json!({"😀": 1, "é": 2, "a": 3, "Z": 4})),
            r#"{"Z":4,"a":3,"\u00e9":2,"\ud83d\ude00":1}"#
        );
    }

    #[test]
    fn floats_are_refused() {
        let e = canonical(&serde_json::json!({"x": 1.5})).unwrap_err();
        assert!(e.contains("1.5"), "{e}");
        let e = OriginalManifest::parse(br#"{"files":[],"v":1.0}"#).unwrap_err();
        assert_eq!(e.kind(), "bad_manifest");
    }

    #[test]
    fn render_then_parse_verifies_and_tampering_does_not() {
        let files = [
            OriginalFile::of("main.py", b"print(1)\n"),
            OriginalFile::of("lib/\u{e9}.py", b""),
        ];
        let streamed = OriginalFile::read("main.py", &mut &b"print(1)\n"[..]).unwrap();
        assert_eq!(streamed, files[0]);
        let bytes = render(
            &files,
            &["old.py".into()],
            Some("1.0-\u{e9}"),
            Some("migrate"),
            Some(b"k"),
        )
        .unwrap();
        assert!(bytes.is_ascii(), "ensure_ascii");
        let m = OriginalManifest::parse(&bytes).unwrap();
        m.verify(b"k").unwrap();
        assert_eq!(m.files[0].path, "lib/\u{e9}.py", "sorted");
        assert_eq!(m.files[1].crc32, Some(crc32fast::hash(b"print(1)\n")));
        assert_eq!(m.version.as_deref(), Some("1.0-\u{e9}"));
        assert_eq!(m.post_update.as_deref(), Some("migrate"));
        assert_eq!(m.verify(b"other").unwrap_err().kind(), "bad_signature");
        let tampered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"size\":9", "\"size\":8");
        let t = OriginalManifest::parse(tampered.as_bytes()).unwrap();
        assert_eq!(t.verify(b"k").unwrap_err().kind(), "bad_signature");
        let unsigned = render(&files, &[], None, None, None).unwrap();
        let u = OriginalManifest::parse(&unsigned).unwrap();
        assert_eq!(u.verify(b"k").unwrap_err().kind(), "missing_signature");
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let sha = "0".repeat(64);
        let cases = [
            ("[]".to_owned(), "not a JSON object"),
            ("{}".to_owned(), "no `files`"),
            (
                format!(r#"{{"files":[{{"path":"../x","size":1,"sha256":"{sha}"}}]}}"#),
                "not a valid path",
            ),
            (
                format!(
                    r#"{{"files":[{{"path":"a","size":1,"sha256":"{sha}"}},{{"path":"a","size":1,"sha256":"{sha}"}}]}}"#
                ),
                "twice",
            ),
            (
                format!(
                    r#"{{"files":[{{"path":"a","size":1,"sha256":"{sha}"}}],"deletes":["a"]}}"#
                ),
                "both",
            ),
            (
                r#"{"files":[],"post_update":"rm -rf /"}"#.to_owned(),
                "not a plain name",
            ),
            (
                format!(r#"{{"files":[],"post_update":"{}"}}"#, "p".repeat(256)),
                "not a plain name",
            ),
            (
                r#"{"files":[{"path":"a","size":1,"sha256":"xyz"}]}"#.to_owned(),
                "sha256",
            ),
        ];
        for (json, why) in cases {
            let e = OriginalManifest::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "bad_manifest");
            assert!(e.to_string().contains(why), "{json}: {e}");
        }
        let long = format!(r#"{{"files":[],"post_update":"{}"}}"#, "p".repeat(255));
        assert!(OriginalManifest::parse(long.as_bytes()).is_ok());
    }
}
