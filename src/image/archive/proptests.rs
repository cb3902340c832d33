//! Property tests of the archive importer's planning (issue 18's fuzzing): an archive
//! changed in any way plans, or is refused with an [`super::ArchiveError`], never a panic,
//! a hang or an allocation sized by what the archive claims. Two kinds of change: bytes of
//! the whole file overwritten or cut (tar headers, gzip streams), and bytes of one of its
//! JSON documents changed with the tar rewritten around it (so the change reaches the
//! manifest, index and config parsers). The good archives are the table tests' own.
//! `PROPTEST_CASES` sets the number of cases; deploy/fuzz.sh runs them longer.

use std::io::Read;
use std::path::Path;

use proptest::prelude::*;

use super::tests::{good_docker, good_index, good_oci};
use super::{plan_import, NoProgress};

/// The three good archives' bytes, made once.
fn good() -> &'static [Vec<u8>; 3] {
    static GOOD: std::sync::OnceLock<[Vec<u8>; 3]> = std::sync::OnceLock::new();
    GOOD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
        [
            read(good_oci(dir.path())),
            read(good_docker(dir.path())),
            read(good_index(dir.path())),
        ]
    })
}

fn plan_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changed.tar");
    std::fs::write(&path, bytes).unwrap();
    let _ = plan_import(&path, None, &mut NoProgress);
    let _ = plan_import(&path, Some("renamed:v1"), &mut NoProgress);
}

/// The archive `bytes` with its `n`th JSON document (cycled) changed by `edits`.
fn with_json_changed(bytes: &[u8], n: usize, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((name, e.header().clone(), data));
    }
    let json: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].2.first() == Some(&b'{'))
        .collect();
    if let Some(&i) = json.get(n % json.len().max(1)) {
        let doc = &mut entries[i].2;
        for &(at, b) in edits {
            if !doc.is_empty() {
                let at = at % doc.len();
                doc[at] = b;
            }
        }
        if let Some(c) = cut {
            doc.truncate(c % (doc.len() + 1));
        }
    }
    let mut out = tar::Builder::new(Vec::new());
    for (name, mut header, data) in entries {
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append_data(&mut header, name, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

/// Bytes that make JSON mean something else: quotes, brackets, digits, a huge number.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'"'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b']'),
        Just(b','),
        Just(b':'),
        Just(b'9'),
        Just(b'-'),
        Just(b'0'),
        any::<u8>(),
    ]
}

#[test]
fn the_good_archives_still_plan() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bytes) in good().iter().enumerate() {
        let path = dir.path().join(format!("{i}.tar"));
        std::fs::write(&path, bytes).unwrap();
        plan_import(&path, None, &mut NoProgress).unwrap();
        // Rewriting the tar around unchanged documents keeps it good.
        let path: &Path = &dir.path().join(format!("{i}-rewritten.tar"));
        std::fs::write(path, with_json_changed(bytes, 0, &[], None)).unwrap();
        plan_import(path, None, &mut NoProgress).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_archive_with_bytes_overwritten_or_cut_plans_or_is_refused(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = good()[which].clone();
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        plan_bytes(&bytes);
    }

    #[test]
    fn an_archive_with_a_json_document_changed_plans_or_is_refused(
        which in 0usize..3,
        doc: usize,
        edits in proptest::collection::vec((any::<usize>(), json_byte()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        plan_bytes(&with_json_changed(&good()[which], doc, &edits, cut));
    }
}
