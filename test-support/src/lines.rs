//! A child process's output, collected line by line as it comes (ANSI colours removed),
//! each line stamped with when it arrived, shared with the threads or tasks reading it.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead};

/// The collected lines; clones share them.
#[derive(Clone)]
pub struct Lines {
    t0: Instant,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines::new()
    }
}

impl Lines {
    /// Empty; arrival times count from now.
    pub fn new() -> Lines {
        Lines {
            t0: Instant::now(),
            lines: Arc::default(),
        }
    }

    /// Adds one line (without its newline), colours removed.
    pub fn push(&self, line: &str) {
        let at = self.t0.elapsed();
        if let Ok(mut v) = self.lines.lock() {
            v.push((at, strip_ansi(line)));
        }
    }

    /// Everything so far, one line each.
    pub fn text(&self) -> String {
        match self.lines.lock() {
            Ok(v) => v.iter().map(|(_, l)| format!("{l}\n")).collect(),
            Err(_) => String::new(),
        }
    }

    /// When the first line containing `needle` arrived.
    pub fn seen(&self, needle: &str) -> Option<Duration> {
        let v = self.lines.lock().ok()?;
        v.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t)
    }

    /// Reads `stream` into these lines on a thread of its own, until it ends.
    pub fn read_in_thread(
        &self,
        stream: impl Read + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                me.push(&line);
            }
        })
    }

    /// Reads `stream` into these lines (and into `copy`, if given) on a task, until it ends.
    pub fn read_in_task(
        &self,
        stream: impl AsyncRead + Unpin + Send + 'static,
        copy: Option<Lines>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                me.push(&line);
                if let Some(c) = &copy {
                    c.push(&line);
                }
            }
        })
    }
}

/// Removes ANSI escape sequences (runlet colours its log on a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` non-empty lines of `text`, joined with " | ", for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_and_tail() {
        assert_eq!(strip_ansi("\u{1b}[32m INFO\u{1b}[0m x"), " INFO x");
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
    }

    #[test]
    fn lines_are_collected_stamped_and_found() {
        let l = Lines::new();
        l.read_in_thread(&b"one\n\x1b[1mtwo\x1b[0m\n"[..])
            .join()
            .unwrap();
        assert_eq!(l.text(), "one\ntwo\n");
        assert!(l.seen("two").is_some());
        assert!(l.seen("three").is_none());
    }
}
