//! Validating the validator: a deliberately broken runlet, and the verdicts on the checks
//! that must notice it.
//!
//! The broken runlet is a generated bash script passed as `--runlet`. It runs the real
//! runlet with its flags mangled (see [`Mangle`]); runlet itself is not changed. Every
//! check that declares a mangling it must catch runs against both runlets:
//!
//! | honest | broken | verdict |
//! |---|---|---|
//! | PASS | FAIL | caught: the check can fail |
//! | FAIL | FAIL | inconclusive: it fails anyway today (a missing feature) |
//! | any  | PASS | DEFECT: the check cannot tell a broken runlet from a good one |

use std::fmt;
use std::path::Path;

/// One way the broken runlet mangles what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mangle {
    DropPort,
    ReverseArgs,
    Concurrency80,
    DropTimeout,
    RaiseMemory,
    ChangeCpu,
    DropHttp2,
    ExtraTask,
    JobAlwaysSucceeds,
}

impl Mangle {
    /// What the broken runlet does, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Mangle::DropPort => "drops `--port N` (the container gets the default 8080)",
            Mangle::ReverseArgs => "reverses the items of `--args`",
            Mangle::Concurrency80 => "turns `--concurrency 1` into `--concurrency 80`",
            Mangle::DropTimeout => "drops `--timeout` (the default 300 s applies)",
            Mangle::RaiseMemory => "turns any `--memory` into `--memory 2Gi`",
            Mangle::ChangeCpu => "turns `--cpu N` into `--cpu 1` (`--cpu 2` when N is 1)",
            Mangle::DropHttp2 => "drops `--use-http2`",
            Mangle::ExtraTask => "adds one to `--tasks`",
            Mangle::JobAlwaysSucceeds => "exits 0 after `job execute`, whatever runlet's exit code",
        }
    }
}

/// The broken runlet: a bash script running `real` with every [`Mangle`] applied.
pub fn wrapper_script(real: &Path) -> String {
    let quoted = format!("'{}'", real.to_string_lossy().replace('\'', "'\\''"));
    format!(
        r#"#!/usr/bin/env bash
# A deliberately broken runlet, written by `runlet-conformance --self-test`: it runs the
# real runlet with mangled flags, so that the checks which must notice FAIL.
real={quoted}
out=()
job=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) shift 2 ;;
    --port=*) shift ;;
    --args)
      IFS=, read -r -a items <<< "$2"
      rev=()
      for ((i = ${{#items[@]}} - 1; i >= 0; i--)); do rev+=("${{items[i]}}"); done
      out+=(--args "$(IFS=,; printf '%s' "${{rev[*]}}")")
      shift 2 ;;
    --concurrency)
      if [ "$2" = 1 ]; then out+=(--concurrency 80); else out+=("$1" "$2"); fi
      shift 2 ;;
    --timeout) shift 2 ;;
    --memory) out+=(--memory 2Gi); shift 2 ;;
    --cpu)
      if [ "$2" = 1 ]; then out+=(--cpu 2); else out+=(--cpu 1); fi
      shift 2 ;;
    --use-http2) shift ;;
    --tasks) out+=(--tasks "$(( $2 + 1 ))"); shift 2 ;;
    execute) job=1; out+=("$1"); shift ;;
    *) out+=("$1"); shift ;;
  esac
done
if [ "$job" = 1 ]; then
  "$real" "${{out[@]}}"
  exit 0
fi
exec "$real" "${{out[@]}}"
"#
    )
}

/// What the self-test concludes about one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// PASS against runlet, FAIL against the broken one.
    Caught,
    /// FAIL against both: it cannot be shown to fail for the right reason today.
    Inconclusive,
    /// PASS against the broken runlet.
    Defect,
}

impl Verdict {
    pub fn of(honest_passed: bool, broken_passed: bool) -> Verdict {
        match (honest_passed, broken_passed) {
            (_, true) => Verdict::Defect,
            (true, false) => Verdict::Caught,
            (false, false) => Verdict::Inconclusive,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Caught => "caught",
            Verdict::Inconclusive => "inconclusive (fails against runlet too)",
            Verdict::Defect => "DEFECT (cannot fail)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs the wrapper with `echo` standing in for runlet; returns what it printed.
    fn mangled(args: &[&str]) -> (String, i32) {
        let dir = std::env::temp_dir().join(format!("conf-selftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("fake runlet's");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\nexit 7\n",
        )
        .unwrap();
        let script = dir.join("broken.sh");
        std::fs::write(&script, wrapper_script(&fake)).unwrap();
        for p in [&fake, &script] {
            Command::new("chmod").arg("755").arg(p).status().unwrap();
        }
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    #[test]
    fn the_wrapper_mangles_serve_flags() {
        let (out, code) = mangled(&[
            "--containerd-address",
            "/s",
            "serve",
            "--port",
            "8801",
            "--args",
            "-c,a b,--x=1",
            "--concurrency",
            "1",
            "--timeout",
            "10",
            "--memory",
            "128Mi",
            "--cpu",
            "2",
            "--use-http2",
            "--startup-timeout",
            "5s",
            "--image",
            "probe",
        ]);
        assert_eq!(
            out,
            "[--containerd-address][/s][serve][--args][--x=1,a b,-c][--concurrency][80][--memory][2Gi][--cpu][1][--startup-timeout][5s][--image][probe]"
        );
        assert_eq!(code, 7, "serve keeps runlet's exit code");
        let (out, _) = mangled(&["serve", "--concurrency", "5", "--cpu", "1"]);
        assert_eq!(out, "[serve][--concurrency][5][--cpu][2]");
    }

    #[test]
    fn the_wrapper_mangles_jobs() {
        let (out, code) = mangled(&[
            "job",
            "execute",
            "j",
            "--tasks",
            "3",
            "--task-timeout",
            "2s",
            "--args",
            "job",
        ]);
        assert_eq!(
            out,
            "[job][execute][j][--tasks][4][--task-timeout][2s][--args][job]"
        );
        assert_eq!(code, 0, "job execute always 'succeeds'");
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::of(true, false), Verdict::Caught);
        assert_eq!(Verdict::of(false, false), Verdict::Inconclusive);
        assert_eq!(Verdict::of(true, true), Verdict::Defect);
        assert_eq!(Verdict::of(false, true), Verdict::Defect);
    }
}
