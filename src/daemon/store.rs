//! The daemon's durable desired state: JSON records addressed by `(kind, key)` under a
//! state directory, each written so that a crash loses nothing a returned `put` or `delete`
//! promised.
//!
//! Layout: `<dir>/<kind>/<encoded key>.json`, directories mode 0700, records mode 0600.
//! A kind is a lowercase directory name (`services`, `jobs`, ...); a key is any non-empty
//! string, usually a resource name with `/` in it, encoded by [`encode_key`]:
//!
//! - ASCII letters, digits, `_` and `-` stand for themselves;
//! - every other byte of the key's UTF-8 (including `/`, `.` and `%`) becomes `%XX`,
//!   two upper-case hex digits.
//!
//! So `projects/p/locations/l/services/hello` is stored as
//! `projects%2Fp%2Flocations%2Fl%2Fservices%2Fhello.json`. The encoding is reversible
//! ([`decode_key`] accepts exactly what [`encode_key`] produces), an encoded name never
//! contains `/` and never starts with `.`, so no key can name a file outside its kind's
//! directory, a hidden file, `.` or `..`.
//!
//! Crash safety: `put` writes a temp file (`.tmp-...`) in the record's directory, fsyncs
//! it, renames it over the record and fsyncs the directory; `delete` fsyncs the directory
//! after the unlink; a newly made directory is fsynced into its parent. A temp file left by
//! a crash is never read as a record and [`Store::open`] removes it, so take
//! [`super::lock::StateLock`] first: another daemon's in-flight temp file would be removed
//! under it.
//!
//! A record that does not parse is skipped by [`Store::list`] with a `tracing` warning
//! naming the file (the good records are still returned, so one bad file does not stop
//! the daemon from serving the rest); [`Store::get`] of that key returns
//! [`StoreError::Decode`].
//!
//! Every call does blocking file I/O with fsync; async callers should use
//! `tokio::task::spawn_blocking` where a few milliseconds of blocking matter.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tracing::warn;

use crate::util::{random_suffix, Chain};

/// Mode of the state directory and of each kind's directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of each record file.
pub const FILE_MODE: u32 = 0o600;

/// Suffix of a record's file name.
const RECORD_SUFFIX: &str = ".json";
/// Prefix of a temp file written by `put`.
const TEMP_PREFIX: &str = ".tmp-";
/// Longest file name most Linux file systems allow, in bytes.
const NAME_MAX: usize = 255;
/// Longest kind name.
const KIND_MAX: usize = 64;

/// What the store was doing when the file system said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateDir,
    Chmod,
    Read,
    List,
    Write,
    Sync,
    Rename,
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::CreateDir => "creating directory",
            Op::Chmod => "setting the mode of",
            Op::Read => "reading",
            Op::List => "listing",
            Op::Write => "writing",
            Op::Sync => "syncing",
            Op::Rename => "renaming a temp file to",
            Op::Delete => "deleting",
        })
    }
}

/// Errors of the [`Store`]; each names the file or directory, and prints its cause once
/// (as its `source`).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{op} {}", path.display())]
    Io {
        op: Op,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decoding the record in {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the {kind} record {key:?}")]
    Encode {
        kind: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record kind {kind:?} is not a name of 1 to {KIND_MAX} characters from [a-z0-9_-]")]
    BadKind { kind: String },
    #[error("record key {key:?} {reason}")]
    BadKey { key: String, reason: &'static str },
}

fn io_err(op: Op, path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// JSON records by `(kind, key)` under one state directory (see the module doc).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating it, mode 0700, if needed) the state directory `dir`, sets it and
    /// each kind's directory to mode 0700 if they are anything else, and removes temp
    /// files an interrupted `put` left.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        private_dir(dir)?;
        let entries = fs::read_dir(dir).map_err(io_err(Op::List, dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(Op::List, dir))?;
            let path = entry.path();
            let is_kind = entry.file_name().to_str().is_some_and(valid_kind);
            if !is_kind || !path.is_dir() {
                continue;
            }
            private_dir(&path)?;
            remove_temps(&path)?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `value` as the record `(kind, key)`, replacing any earlier one; durable when
    /// this returns `Ok`.
    pub fn put<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let name = record_name(key)?;
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
            kind: kind.to_string(),
            key: key.to_string(),
            source,
        })?;
        bytes.push(b'\n');
        let kdir = self.kind_dir(kind)?;
        private_dir(&kdir)?;
        let path = kdir.join(name);
        let tmp = kdir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            random_suffix(12)
        ));
        let written = write_synced(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_err(Op::Rename, &path)));
        if written.is_err() {
            // Best effort: a temp file that stays is removed by the next `open`.
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(&kdir)
    }

    /// The record `(kind, key)`, or `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>, StoreError> {
        let path = self.kind_dir(kind)?.join(record_name(key)?);
        match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(Op::Read, &path)(e)),
        }
    }

    /// Deletes the record `(kind, key)`; durable when this returns. Returns whether there
    /// was one (a missing record is not an error).
    pub fn delete(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
        let kdir = self.kind_dir(kind)?;
        let path = kdir.join(record_name(key)?);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&kdir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(Op::Delete, &path)(e)),
        }
    }

    /// Every record of `kind`, sorted by key. Temp files and files whose names are not
    /// encoded keys are ignored; a record that does not parse is skipped with a warning.
    pub fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, T)>, StoreError> {
        let kdir = self.kind_dir(kind)?;
        let entries = match fs::read_dir(&kdir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(Op::List, &kdir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(Op::List, &kdir))?;
            let path = entry.path();
            let Some(key) = entry.file_name().to_str().and_then(key_of_record_name) else {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    warn!(path = %path.display(), "ignoring a file that is not a record");
                }
                continue;
            };
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Deleted since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(Op::Read, &path)(e)),
            };
            match decode(&path, &bytes) {
                Ok(value) => out.push((key, value)),
                Err(e) => warn!(error = %Chain(&e), "skipping a record that does not parse"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn kind_dir(&self, kind: &str) -> Result<PathBuf, StoreError> {
        if !valid_kind(kind) {
            return Err(StoreError::BadKind {
                kind: kind.to_string(),
            });
        }
        Ok(self.dir.join(kind))
    }
}

/// The file name stem (without `.json`) that stores `key`; see the module doc.
pub fn encode_key(key: &str) -> Result<String, StoreError> {
    let bad = |reason| StoreError::BadKey {
        key: key.to_string(),
        reason,
    };
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if kept(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
    }
    if out.len() + RECORD_SUFFIX.len() > NAME_MAX {
        return Err(bad("is too long to be a file name once encoded"));
    }
    Ok(out)
}

/// The key a file name stem stores, if the stem is exactly what [`encode_key`] makes of
/// some key (anything else, such as `%2f` in lower case or a bare `.`, is not a key).
pub fn decode_key(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if kept(b) {
            out.push(b);
            i += 1;
        } else if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            let byte = hi << 4 | lo;
            if kept(byte) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            return None;
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n)])
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn record_name(key: &str) -> Result<String, StoreError> {
    Ok(encode_key(key)? + RECORD_SUFFIX)
}

fn key_of_record_name(name: &str) -> Option<String> {
    decode_key(name.strip_suffix(RECORD_SUFFIX)?)
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= KIND_MAX
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` (mode 0700, fsynced into its parent) or sets an existing one to 0700.
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let existed = dir.is_dir();
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err(Op::CreateDir, dir))?;
    let mode = fs::metadata(dir)
        .map_err(io_err(Op::CreateDir, dir))?
        .permissions()
        .mode();
    // Exactly 0700: looser lets others read the state, tighter stops the daemon itself.
    if mode & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(io_err(Op::Chmod, dir))?;
    }
    if !existed {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to the new file `path` (mode 0600) and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(Op::Write, path))?;
    // The umask may have taken bits off; say exactly what the mode is.
    f.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_err(Op::Chmod, path))?;
    f.write_all(bytes).map_err(io_err(Op::Write, path))?;
    f.sync_all().map_err(io_err(Op::Sync, path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(Op::Sync, dir))
}

fn remove_temps(kdir: &Path) -> Result<(), StoreError> {
    let entries = fs::read_dir(kdir).map_err(io_err(Op::List, kdir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(Op::List, kdir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(Op::Delete, &path)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{json, Value};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Svc {
        name: String,
        max: u32,
    }

    const HELLO: &str = "projects/p/locations/l/services/hello";

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("state")).unwrap();
        (tmp, store)
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn key_encoding_table() {
        let table = [
            (HELLO, "projects%2Fp%2Flocations%2Fl%2Fservices%2Fhello"),
            ("hello", "hello"),
            ("a_b-C9", "a_b-C9"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("../../etc/passwd", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
            ("/", "%2F"),
            ("a/../b", "a%2F%2E%2E%2Fb"),
            ("100%", "100%25"),
            ("%2F", "%252F"),
            ("café", "caf%C3%A9"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
            ("a b\n", "a%20b%0A"),
            ("\0", "%00"),
        ];
        for (key, stem) in table {
            assert_eq!(encode_key(key).unwrap(), stem, "encode {key:?}");
            assert_eq!(decode_key(stem).as_deref(), Some(key), "decode {stem:?}");
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
        }
    }

    #[test]
    fn key_encoding_refuses() {
        assert!(matches!(encode_key(""), Err(StoreError::BadKey { .. })));
        let long = "x".repeat(NAME_MAX);
        assert!(matches!(encode_key(&long), Err(StoreError::BadKey { .. })));
        assert!(encode_key(&"x".repeat(NAME_MAX - RECORD_SUFFIX.len())).is_ok());
        // Only what encode_key produces decodes, so a name maps to one key and back.
        for stem in [
            "", ".", "..", "a.b", "%2f", "%2", "%", "%ZZ", "%41", "%C3", "a/b", "é", ".tmp-1-x",
        ] {
            assert_eq!(decode_key(stem), None, "{stem:?}");
        }
    }

    #[test]
    fn round_trip_overwrite_delete() {
        let (_tmp, s) = store();
        assert_eq!(s.get::<Svc>("services", HELLO).unwrap(), None);
        let v1 = Svc {
            name: HELLO.into(),
            max: 1,
        };
        s.put("services", HELLO, &v1).unwrap();
        assert_eq!(s.get::<Svc>("services", HELLO).unwrap(), Some(v1));
        let v2 = Svc {
            name: HELLO.into(),
            max: 2,
        };
        s.put("services", HELLO, &v2).unwrap();
        assert_eq!(s.get::<Svc>("services", HELLO).unwrap(), Some(v2));
        assert!(s.delete("services", HELLO).unwrap());
        assert_eq!(s.get::<Svc>("services", HELLO).unwrap(), None);
        assert!(!s.delete("services", HELLO).unwrap(), "missing is fine");
        assert!(!s.delete("never", HELLO).unwrap(), "missing kind is fine");
    }

    #[test]
    fn list_sorted_per_kind_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        assert!(s.list::<Value>("services").unwrap().is_empty());
        for key in ["b/2", "a/1", "café/..", "c"] {
            s.put("services", key, &json!({ "k": key })).unwrap();
        }
        s.put("jobs", "a/1", &json!(1)).unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let got = s.list::<Value>("services").unwrap();
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a/1", "b/2", "c", "café/.."]);
        assert!(got.iter().all(|(k, v)| v["k"] == json!(k)));
        assert_eq!(s.list::<Value>("jobs").unwrap(), [("a/1".into(), json!(1))]);
    }

    #[test]
    fn keys_stay_inside_their_kind_dir() {
        let (_tmp, s) = store();
        for key in ["../../escape", "/abs", "..", "."] {
            s.put("services", key, &json!(key)).unwrap();
        }
        let names: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["services"]);
        assert_eq!(s.list::<Value>("services").unwrap().len(), 4);
        for kind in [
            "",
            "..",
            "a/b",
            "Services",
            ".tmp",
            &"k".repeat(KIND_MAX + 1),
        ] {
            let e = s.put(kind, "k", &json!(1)).unwrap_err();
            assert!(matches!(e, StoreError::BadKind { .. }), "{kind:?}: {e}");
        }
    }

    #[test]
    fn permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/state");
        let s = Store::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        s.put("services", HELLO, &json!({})).unwrap();
        assert_eq!(mode(&dir.join("services")), 0o700);
        let file = dir.join("services").join(record_name(HELLO).unwrap());
        assert_eq!(mode(&file), 0o600);

        // A looser existing directory (and kind directory) is tightened on open.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("services"), Permissions::from_mode(0o777)).unwrap();
        Store::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("services")), 0o700);
    }

    #[test]
    fn temp_leftover_ignored_then_cleaned_on_open() {
        let (_tmp, s) = store();
        s.put("services", "a", &json!(1)).unwrap();
        let leftover = s.dir().join("services/.tmp-42-abcdef");
        fs::write(&leftover, b"{\"half\":").unwrap();
        assert_eq!(
            s.list::<Value>("services").unwrap(),
            [("a".into(), json!(1))]
        );
        Store::open(s.dir()).unwrap();
        assert!(!leftover.exists());
        assert_eq!(
            s.list::<Value>("services").unwrap(),
            [("a".into(), json!(1))]
        );
    }

    #[test]
    fn corrupt_record_skipped_by_list_and_named_by_get() {
        let (_tmp, s) = store();
        s.put("services", "good", &json!("ok")).unwrap();
        s.put("services", "bad", &json!("soon bad")).unwrap();
        let bad = s.dir().join("services/bad.json");
        fs::write(&bad, b"{not json").unwrap();
        // Not records: ignored.
        fs::write(s.dir().join("services/README"), b"x").unwrap();
        fs::write(s.dir().join("services/a.b.json"), b"1").unwrap();
        assert_eq!(
            s.list::<Value>("services").unwrap(),
            [("good".into(), json!("ok"))]
        );
        let e = s.get::<Value>("services", "bad").unwrap_err();
        assert!(matches!(&e, StoreError::Decode { path, .. } if *path == bad));
        assert_eq!(
            e.to_string(),
            format!("decoding the record in {}", bad.display())
        );
    }

    #[test]
    fn errors_print_the_cause_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let e = Store::open(&file.join("state")).unwrap_err();
        let shown = Chain(&e).to_string();
        assert!(
            shown.starts_with(&format!(
                "creating directory {}: ",
                file.join("state").display()
            )),
            "{shown}"
        );
        assert_eq!(shown.matches("Not a directory").count(), 1, "{shown}");
    }
}
