//! Container output: one FIFO per stream (so stdout and stderr stay apart with containerd
//! 1.6's shim), read line by line into runlet's log, tagged with the instance or task.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

/// Where each line goes.
pub type Sink = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The FIFOs of one container and the tasks reading them (aborted on drop).
pub struct Pipes {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    readers: Vec<JoinHandle<()>>,
}

impl Pipes {
    /// Creates `dir/stdout` and `dir/stderr` FIFOs and starts reading them. The read side is
    /// opened read-write, before the task exists, so the shim's open never blocks and a
    /// restart of the writer does not end the stream.
    pub fn open(dir: &Path, sink: Sink) -> std::io::Result<Pipes> {
        std::fs::create_dir_all(dir)?;
        let mut readers = Vec::new();
        let mut paths = Vec::new();
        for stream in ["stdout", "stderr"] {
            let path = dir.join(stream);
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(std::io::Error::from)?;
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)?;
            let sink = sink.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(rx).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink(stream, &line);
                }
            }));
            paths.push(path);
        }
        let stderr = paths.pop().unwrap_or_default();
        let stdout = paths.pop().unwrap_or_default();
        Ok(Pipes {
            stdout,
            stderr,
            readers,
        })
    }

    /// Lets the readers drain what the container wrote last, then stops them.
    pub async fn close(mut self) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for r in self.readers.drain(..) {
            r.abort();
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

impl Drop for Pipes {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}
