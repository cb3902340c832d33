//! A file of its own for each task of an execution: task `i` finds the host file
//! `dir/i.json` read-only at one path in its container, and that path in an environment
//! variable. The engine only mounts it; who writes the files (the daemon's Pub/Sub trigger:
//! one message per task) decides what they hold.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where an execution's per-task files are, and how a task finds its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFile {
    /// The host directory holding `<index>.json` for every task index.
    pub dir: PathBuf,
    /// Where the file appears in the container (bind-mounted read-only).
    pub path: String,
    /// The environment variable that holds `path`.
    pub env: String,
}

impl TaskFile {
    /// Task `index`'s file on the host.
    pub fn source(&self, index: u32) -> PathBuf {
        self.dir.join(format!("{index}.json"))
    }

    /// What task `index`'s container gets: its env entry and its mount (container path,
    /// host path).
    pub fn for_task(&self, index: u32) -> (String, (String, String)) {
        (
            format!("{}={}", self.env, self.path),
            (self.path.clone(), self.source(index).display().to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_gets_its_own_file_at_one_path() {
        let f = TaskFile {
            dir: "/state/pubsub/e".into(),
            path: "/run/m.json".into(),
            env: "M".into(),
        };
        assert_eq!(
            f.for_task(7),
            (
                "M=/run/m.json".to_string(),
                (
                    "/run/m.json".to_string(),
                    "/state/pubsub/e/7.json".to_string()
                )
            )
        );
    }
}
