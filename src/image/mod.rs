//! Images: names, archives, and what runlet needs from an image to run it.

pub mod archive;
pub mod config;
pub mod media;
pub mod reference;
pub mod registry;

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Everything the control path needs to know about a stored image to create a container.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub name: String,
    /// Digest of the manifest the image resolves to.
    pub digest: String,
    pub config: config::RunConfig,
    /// The chain ID of the top layer: the snapshot a container's root filesystem starts from.
    pub chain_id: String,
    pub size: i64,
    pub labels: HashMap<String, String>,
}

/// Chain IDs as the OCI image spec defines them: the first is the first diffID, each next
/// one is `sha256(parent + " " + diffID)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(ids[1], want);
        assert!(chain_ids(&[]).is_empty());
    }
}
