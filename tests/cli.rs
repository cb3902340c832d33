//! The `runlet` binary's answers that need no containerd: bad flags exit 64 naming the flag
//! and the allowed range (never a panic), and its log is plain text when stderr is a pipe.

use std::process::{Command, Output};

/// `runlet ARGS` pointed at a containerd that is not there (the refusals come first).
fn runlet(args: &[&str]) -> (Output, String) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runlet"))
        .args(["--containerd-address", "/nonexistent/containerd.sock"])
        .args(["--no-embedded-containerd", "--state-dir"])
        .arg(state.path())
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUNLET_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn a_duration_too_long_for_any_clock_exits_64_naming_the_flag_and_range() {
    let huge = "100000000000000000000000";
    let serve = ["serve", "--image", "probe"];
    let job = ["job", "execute", "cli-huge", "--image", "probe"];
    for (cmd, flag, range) in [
        (&serve[..], "--timeout", "allowed 1s to 3600s"),
        (&serve[..], "--idle-timeout", "allowed 0s to 900s"),
        (&serve[..], "--startup-timeout", "allowed 1s to 240s"),
        (&job[..], "--task-timeout", "allowed 1s to 168h"),
    ] {
        for value in [huge, "1e400", "99999999999999999999999999h"] {
            let (out, err) = runlet(&[cmd, &[flag, value]].concat());
            assert_eq!(out.status.code(), Some(64), "{flag} {value}: {err}");
            assert!(err.contains(flag), "{flag} {value}: {err}");
            assert!(!err.contains("panicked"), "{flag} {value}: {err}");
            if value == huge {
                assert!(err.contains(range), "{flag} {value}: {err}");
            }
        }
    }
}

#[test]
fn a_number_too_large_for_its_flag_exits_64_naming_the_flag() {
    for flag in ["--concurrency", "--max-instances", "--port"] {
        let (out, err) = runlet(&[
            "serve",
            "--image",
            "probe",
            flag,
            "100000000000000000000000",
        ]);
        assert_eq!(out.status.code(), Some(64), "{flag}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_runlet"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    // A bad filter is warned about (and info used) before containerd is reached.
    let (_, err) = runlet(&["--log-level", "runlet=loud", "image", "ls"]);
    assert!(
        err.contains("WARN") && err.contains("--log-level"),
        "no warning logged: {err}"
    );
    assert!(!err.contains("\x1b["), "colour codes to a pipe: {err:?}");
}
