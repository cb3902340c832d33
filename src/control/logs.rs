//! Container output: one FIFO per stream (so stdout and stderr stay apart with containerd
//! 1.6's shim), read line by line into runlet's log, tagged with the instance or task.
//!
//! runlet holds each FIFO open read-write, so the stream never reaches end-of-file. The end
//! is decided instead: [`Pipes::close`], called once the task is deleted, reads what is left
//! in the pipe until it is empty and stops. That is enough: containerd's shim finishes
//! copying the container's output into the FIFO before `Tasks.Delete` returns.
//!
//! How bytes become lines (the 16 KiB bound) is [`lines`].

mod lines;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::unix::pipe::Receiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use lines::{Piece, Splitter};

/// Where each line goes.
pub type Sink = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How long [`Pipes::close`] waits for a reader (a sink stuck on a blocked terminal, say)
/// before giving up on it.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// The FIFOs of one container and the tasks reading them (aborted on drop).
pub struct Pipes {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    readers: Vec<JoinHandle<()>>,
    closing: watch::Sender<bool>,
}

impl Pipes {
    /// Creates `dir/stdout` and `dir/stderr` FIFOs and starts reading them. The read side is
    /// opened read-write, before the task exists, so the shim's open never blocks and a
    /// restart of the writer does not end the stream.
    pub fn open(dir: &Path, sink: Sink) -> std::io::Result<Pipes> {
        std::fs::create_dir_all(dir)?;
        for stream in ["stdout", "stderr"] {
            let path = dir.join(stream);
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(std::io::Error::from)?;
        }
        Self::reattach(dir, sink)
    }

    /// Starts reading the FIFOs of a container that already runs (an adopted instance):
    /// containerd's shim keeps its own read end open while no reader is there, so output
    /// written meanwhile waits in the pipe (until it is full) and is read now.
    pub fn reattach(dir: &Path, sink: Sink) -> std::io::Result<Pipes> {
        let (closing, closing_rx) = watch::channel(false);
        let mut readers = Vec::new();
        let mut paths = Vec::new();
        for stream in ["stdout", "stderr"] {
            let path = dir.join(stream);
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)?;
            readers.push(tokio::spawn(read_lines(
                rx,
                stream,
                sink.clone(),
                closing_rx.clone(),
            )));
            paths.push(path);
        }
        let stderr = paths.pop().unwrap_or_default();
        let stdout = paths.pop().unwrap_or_default();
        Ok(Pipes {
            stdout,
            stderr,
            readers,
            closing,
        })
    }

    /// Passes on what the container wrote last, then stops the readers. Call it after the
    /// task is deleted: by then every byte the container wrote is in the pipe.
    pub async fn close(mut self) {
        let _ = self.closing.send(true);
        for r in self.readers.drain(..) {
            let abort = r.abort_handle();
            if tokio::time::timeout(CLOSE_LIMIT, r).await.is_err() {
                abort.abort();
            }
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

/// Reads `rx` and hands each complete line to `sink` until `closing` says the writers are
/// gone; then reads the pipe until it is empty, hands on the rest (a last line without a
/// newline included) and returns.
async fn read_lines(
    rx: Receiver,
    stream: &'static str,
    sink: Sink,
    mut closing: watch::Receiver<bool>,
) {
    let mut lines = Splitter::default();
    let mut emit = |p: Piece<'_>| sink(stream, &p.text());
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = rx.readable() => {
                if r.is_err() {
                    break;
                }
                match rx.try_read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => lines.push(&chunk[..n], &mut emit),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            _ = closing.wait_for(|c| *c) => break,
        }
    }
    // Read with plain read(2) calls, not tokio's readiness: data may be in the pipe before
    // the reactor has heard of it. The descriptor is non-blocking, so an empty pipe answers
    // EAGAIN at once.
    loop {
        match nix::unistd::read(rx.as_raw_fd(), &mut chunk) {
            Ok(0) => break,
            Ok(n) => lines.push(&chunk[..n], &mut emit),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
}

#[cfg(test)]
mod tests {
    // The sink is a plain (non-async) callback: a std lock, held for one push, fits it.
    #![allow(clippy::disallowed_types)]
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex as StdMutex};

    /// (stream, line) pairs, as the sink saw them.
    type Seen = Arc<StdMutex<Vec<(String, String)>>>;

    fn collecting() -> (Sink, Seen) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let s = seen.clone();
        let sink: Sink = Arc::new(move |stream: &str, text: &str| {
            s.lock()
                .unwrap()
                .push((stream.to_string(), text.to_string()))
        });
        (sink, seen)
    }

    #[tokio::test]
    async fn close_passes_on_everything_written_before_it_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, seen) = collecting();
        let pipes = Pipes::open(dir.path(), sink).unwrap();
        // A writer that writes and goes away, as the shim does before Tasks.Delete returns.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(&pipes.stdout)
            .unwrap();
        let mut err = std::fs::OpenOptions::new()
            .write(true)
            .open(&pipes.stderr)
            .unwrap();
        for i in 0..1000 {
            writeln!(out, "line {i}\r").unwrap();
        }
        out.write_all(b"no newline at the end").unwrap();
        err.write_all(b"bad \xff utf-8\n").unwrap();
        drop((out, err));
        let t0 = tokio::time::Instant::now();
        pipes.close().await;
        assert!(t0.elapsed() < Duration::from_millis(500));
        let seen = seen.lock().unwrap();
        let stdout: Vec<&str> = seen
            .iter()
            .filter(|(s, _)| s == "stdout")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(stdout.len(), 1001);
        assert_eq!(stdout[0], "line 0");
        assert_eq!(stdout[999], "line 999");
        assert_eq!(stdout[1000], "no newline at the end");
        assert!(seen.contains(&("stderr".into(), "bad \u{fffd} utf-8".into())));
        assert!(!dir.path().join("stdout").exists());
    }
}
