//! Per-task inputs a trigger hands an execution (the Pub/Sub trigger: one message per
//! task): a file per task index in `STATE/jobs/inputs/<execution>/`, written before any task
//! starts, with the description of how tasks find it (`task-file.json`: mount path and
//! variable), so a daemon restarted mid-execution mounts the same files again. Removed with
//! the execution.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::control::job::TaskFile;

const DESCRIPTION: &str = "task-file.json";

/// Writes each task's file into the directory given.
pub(crate) type WriteFiles = Box<dyn FnOnce(&Path) -> std::io::Result<()> + Send>;

/// What a trigger provides for an execution it starts.
pub(crate) struct TaskInputs {
    /// Added to the execution's annotations (what started it).
    pub annotations: HashMap<String, String>,
    /// Where each task finds its file, and the variable naming that path.
    pub path: String,
    pub env: String,
    /// Writes `<index>.json` for each task into the directory given.
    pub write: WriteFiles,
}

/// Execution `execution`'s inputs directory.
pub(crate) fn dir(state_dir: &Path, execution: &str) -> PathBuf {
    state_dir.join("jobs").join("inputs").join(execution)
}

/// Writes `inputs`' files for `execution`; what the engine mounts.
pub(crate) fn prepare(
    state_dir: &Path,
    execution: &str,
    inputs: TaskInputs,
) -> std::io::Result<TaskFile> {
    let dir = dir(state_dir, execution);
    std::fs::create_dir_all(&dir)?;
    let file = TaskFile {
        dir: dir.clone(),
        path: inputs.path,
        env: inputs.env,
    };
    (inputs.write)(&dir)?;
    let json = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(DESCRIPTION), json)?;
    Ok(file)
}

/// The task files of `execution`, if a trigger gave it some.
pub(crate) fn find(state_dir: &Path, execution: &str) -> Option<TaskFile> {
    let bytes = std::fs::read(dir(state_dir, execution).join(DESCRIPTION)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes `execution`'s inputs (none: nothing to do).
pub(crate) fn remove(state_dir: &Path, execution: &str) {
    match std::fs::remove_dir_all(dir(state_dir, execution)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(execution, "removing the task inputs: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_found_removed() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(find(state.path(), "e-1"), None);
        let f = prepare(
            state.path(),
            "e-1",
            TaskInputs {
                annotations: HashMap::new(),
                path: "/run/m.json".into(),
                env: "M".into(),
                write: Box::new(|d| std::fs::write(d.join("0.json"), "{}")),
            },
        )
        .unwrap();
        assert!(f.source(0).is_file());
        assert_eq!(find(state.path(), "e-1"), Some(f));
        remove(state.path(), "e-1");
        remove(state.path(), "e-1");
        assert_eq!(find(state.path(), "e-1"), None);
    }
}
