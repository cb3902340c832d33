//! `runlet deploy`'s and `services delete`'s progress, gcloud's shape: a header line, then a
//! tracker (a top step and its stages, each with a mark), redrawn with a spinner on a
//! terminal and printed once, finished, otherwise.

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pending,
    Running,
    Done,
    Failed,
}

/// One line of the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub label: &'static str,
    pub mark: Mark,
    /// Printed after the label (`Done.`, or why it failed).
    pub note: String,
}

/// The spinner's frames (a terminal only).
const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// How a deployment stands: running (`None`), or ended (`Some`: Ok, or the failure message).
pub fn deploy_steps(new_service: bool, outcome: Option<Result<(), &str>>) -> Vec<Step> {
    let top = if new_service {
        "Deploying new service"
    } else {
        "Deploying"
    };
    let step = |label, mark, note: &str| Step {
        label,
        mark,
        note: note.to_string(),
    };
    match outcome {
        None => vec![
            step(top, Mark::Running, ""),
            step("Creating Revision", Mark::Running, ""),
            step("Routing traffic", Mark::Pending, ""),
        ],
        Some(Ok(())) => vec![
            step(top, Mark::Done, "Done."),
            step("Creating Revision", Mark::Done, ""),
            step("Routing traffic", Mark::Done, ""),
        ],
        Some(Err(why)) => vec![
            step(top, Mark::Failed, "Failed."),
            step("Creating Revision", Mark::Failed, why),
            step("Routing traffic", Mark::Pending, ""),
        ],
    }
}

/// The tracker: the first step, then the others indented. `frame` picks the spinner's frame
/// for running steps.
pub fn render(steps: &[Step], frame: usize) -> String {
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        let spin = SPINNER[frame % SPINNER.len()].to_string();
        let mark = match s.mark {
            Mark::Pending => ".",
            Mark::Running => spin.as_str(),
            Mark::Done => "✓",
            Mark::Failed => "✘",
        };
        let indent = if i == 0 { "" } else { "  " };
        let line = format!("{indent}{mark} {}... {}", s.label, s.note);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The header printed before the tracker.
pub fn deploy_header(service: &str, project: &str, region: &str) -> String {
    format!(
        "Deploying container to Cloud Run service [{service}] in project [{project}] region [{region}]\n"
    )
}

/// The lines after a deployment that succeeded.
pub fn deployed(service: &str, revision: &str, url: &str) -> String {
    format!(
        "Done.\nService [{service}] revision [{revision}] has been deployed and is serving 100 percent of traffic.\nService URL: {url}\n"
    )
}

/// Moves a terminal's cursor back up over `lines` lines, clearing them, to redraw them.
pub fn rewind(lines: usize) -> String {
    if lines == 0 {
        return String::new();
    }
    format!("\x1b[{lines}F\x1b[J")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_trackers() {
        assert_eq!(
            render(&deploy_steps(false, Some(Ok(()))), 0),
            "✓ Deploying... Done.\n  ✓ Creating Revision...\n  ✓ Routing traffic...\n"
        );
        assert_eq!(
            render(&deploy_steps(true, None), 1),
            "⠙ Deploying new service...\n  ⠙ Creating Revision...\n  . Routing traffic...\n"
        );
        assert_eq!(
            render(&deploy_steps(false, Some(Err("Image 'x' not found."))), 0),
            "✘ Deploying... Failed.\n  ✘ Creating Revision... Image 'x' not found.\n  . Routing traffic...\n"
        );
        // The spinner wraps around.
        assert_eq!(
            render(&deploy_steps(false, None), SPINNER.len()),
            render(&deploy_steps(false, None), 0)
        );
    }

    #[test]
    fn header_and_result() {
        assert_eq!(
            deploy_header("hello", "local", "local"),
            "Deploying container to Cloud Run service [hello] in project [local] region [local]\n"
        );
        assert_eq!(
            deployed("hello", "hello-00002-abc", "http://hello.localhost:8080"),
            "Done.\nService [hello] revision [hello-00002-abc] has been deployed and is serving 100 percent of traffic.\nService URL: http://hello.localhost:8080\n"
        );
        assert_eq!(rewind(3), "\x1b[3F\x1b[J");
        assert_eq!(rewind(0), "");
    }
}
