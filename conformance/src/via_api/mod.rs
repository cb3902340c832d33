//! The API driver (`--via api`): the checks' services and jobs deployed and run through the
//! Cloud Run Admin API v2 (CreateService / DeleteService, CreateJob / RunJob / GetExecution /
//! DeleteJob) instead of `runlet serve` / `runlet job execute`. Requests go to the URL the
//! API returns. Container logs are what the daemon writes (the suite reads the output of the
//! daemon it started; an endpoint it did not start gives none); runlet's data-path evidence
//! (requests in flight) is the daemon's metrics listener.
//!
//! * [`resources`]: the checks' flags as `Service` and `Job` resources.
//! * [`client`]: the HTTP/JSON calls and long-running operations.
//! * [`daemon`]: the `runlet daemon` the suite starts when given no endpoint.

pub mod client;
pub mod daemon;
pub mod resources;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use runlet_test_support::Lines;

pub use client::Client;

/// What the API driver talks to.
pub struct ApiTarget {
    pub client: Client,
    /// Where container logs are read: the output of the daemon the suite started, or a
    /// file the endpoint's daemon writes its output to (`--daemon-log`).
    pub logs: Option<LogSource>,
    /// The daemon's metrics listener, when known.
    pub metrics: Option<SocketAddr>,
    /// Put before the suite's image names (`probe`, `busybox`, ...), for an endpoint that
    /// pulls them from a registry.
    pub image_prefix: Option<String>,
}

/// Where the daemon's output is.
pub enum LogSource {
    /// Collected from the daemon the suite started.
    Collected(Lines),
    /// A file it writes (read again at each look).
    File(PathBuf),
}

impl LogSource {
    fn text(&self) -> String {
        match self {
            LogSource::Collected(l) => l.text(),
            LogSource::File(p) => match std::fs::read(p) {
                Ok(b) => runlet_test_support::strip_ansi(&String::from_utf8_lossy(&b)),
                Err(e) => format!("(cannot read the daemon's log {}: {e})\n", p.display()),
            },
        }
    }
}

impl fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTarget")
            .field("client", &self.client)
            .field("logs", &self.logs.is_some())
            .field("metrics", &self.metrics)
            .field("image_prefix", &self.image_prefix)
            .finish()
    }
}

impl ApiTarget {
    /// The image the endpoint runs for the suite's image name `image`.
    pub fn image(&self, image: &str) -> String {
        match &self.image_prefix {
            Some(p) => format!("{p}{image}"),
            None => image.to_string(),
        }
    }

    /// The daemon's output lines that contain `needle` (a service's `NAME-`, an
    /// execution's id), or a note that there is no output to read.
    pub fn log_lines(&self, needle: &str) -> String {
        match &self.logs {
            Some(l) => filter_lines(&l.text(), needle),
            None => "(no container logs: the suite did not start this endpoint's daemon and got no --daemon-log, and reading Cloud Logging is not supported)\n".into(),
        }
    }
}

/// The lines of `text` containing `needle`, each ending with a newline.
pub fn filter_lines(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_service() {
        let text = "a c01-x-00001-abc probe: hi\nb c01-xy-00001 other\nc c01-x-00002 bye\n";
        assert_eq!(
            filter_lines(text, "c01-x-"),
            "a c01-x-00001-abc probe: hi\nc c01-x-00002 bye\n"
        );
    }

    #[test]
    fn logs_from_a_file_read_at_each_look() {
        let path = std::env::temp_dir().join(format!("confapi-log-{}", std::process::id()));
        std::fs::write(&path, "\x1b[32mINFO\x1b[0m c01-x-1 one\n").unwrap();
        let src = LogSource::File(path.clone());
        assert_eq!(filter_lines(&src.text(), "c01-x-"), "INFO c01-x-1 one\n");
        std::fs::write(&path, "c01-x-1 one\nc01-x-2 two\n").unwrap();
        assert_eq!(filter_lines(&src.text(), "c01-x-").lines().count(), 2);
        std::fs::remove_file(&path).unwrap();
        assert!(src.text().contains("cannot read"));
    }
}
