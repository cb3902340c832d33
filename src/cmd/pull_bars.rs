//! A pull's progress on a terminal: a bar per layer and one for the whole image (indicatif).
//! Off a terminal `image.rs`'s `LinePrinter` prints one line per layer instead.

// std's Mutex: the progress callbacks are synchronous and never hold it across an await.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runlet::image::registry::PullProgress;

/// The bars of one pull, drawn on stderr.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The first 12 hex digits of a digest, as Docker shows layers.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn new() -> Bars {
        Bars::drawn_on(ProgressDrawTarget::stderr())
    }

    fn drawn_on(target: ProgressDrawTarget) -> Bars {
        let multi = MultiProgress::with_draw_target(target);
        // The total's length grows as layers are announced.
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}",
        ));
        total.set_prefix("total");
        Bars {
            multi,
            total,
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, digest: &str) -> Option<ProgressBar> {
        self.layers.lock().ok()?.get(digest).cloned()
    }

    /// Leaves the bars as they are drawn, so that the summary prints below them.
    pub fn finish(&self) {
        self.total.finish();
    }
}

impl PullProgress for Bars {
    fn fetching(&self, digest: &str, size: u64, from: u64) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}"));
        bar.set_prefix(short(digest).to_string());
        bar.set_position(from);
        if from > 0 {
            bar.set_message("resuming");
        }
        self.total.inc_length(size);
        self.total.inc(from);
        if let Ok(mut l) = self.layers.lock() {
            l.insert(digest.to_string(), bar);
        }
    }

    fn advanced(&self, digest: &str, bytes: u64) {
        if let Some(b) = self.bar(digest) {
            b.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn stored(&self, digest: &str, size: u64, _fetched: u64) {
        if let Some(b) = self.bar(digest) {
            b.set_position(size);
            b.finish_with_message("done");
            return;
        }
        // Already in the store: no fetch was announced.
        let b = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        b.set_style(style("{prefix:>12} {msg}"));
        b.set_prefix(short(digest).to_string());
        b.finish_with_message("already present");
        self.total.inc_length(size);
        self.total.inc(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_named_by_twelve_digits() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn the_total_counts_fetched_resumed_and_present_bytes() {
        let bars = Bars::drawn_on(ProgressDrawTarget::hidden());
        bars.fetching("sha256:aa", 100, 40);
        bars.advanced("sha256:aa", 60);
        bars.stored("sha256:aa", 100, 60);
        bars.stored("sha256:bb", 50, 0);
        assert_eq!(bars.total.length(), Some(150));
        assert_eq!(bars.total.position(), 150);
        assert_eq!(bars.bar("sha256:aa").map(|b| b.position()), Some(100));
    }
}
