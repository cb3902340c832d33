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
    SwapImage,
    RenameService,
    DropEnvVars,
    Concurrency80,
    RaiseMaxInstances,
    DropIdleTimeout,
    DropTimeout,
    RaiseMemory,
    ChangeCpu,
    DropHttp2,
    ExtraTask,
    JobAlwaysSucceeds,
}

impl Mangle {
    /// Every mangling, in the order the script applies them.
    pub const ALL: &'static [Mangle] = &[
        Mangle::DropPort,
        Mangle::ReverseArgs,
        Mangle::SwapImage,
        Mangle::RenameService,
        Mangle::DropEnvVars,
        Mangle::Concurrency80,
        Mangle::RaiseMaxInstances,
        Mangle::DropIdleTimeout,
        Mangle::DropTimeout,
        Mangle::RaiseMemory,
        Mangle::ChangeCpu,
        Mangle::DropHttp2,
        Mangle::ExtraTask,
        Mangle::JobAlwaysSucceeds,
    ];

    /// Its name in `RUNLET_CONFORMANCE_BREAK`.
    pub fn key(self) -> &'static str {
        match self {
            Mangle::DropPort => "drop-port",
            Mangle::ReverseArgs => "reverse-args",
            Mangle::SwapImage => "swap-image",
            Mangle::RenameService => "rename-service",
            Mangle::DropEnvVars => "drop-env-vars",
            Mangle::Concurrency80 => "concurrency-80",
            Mangle::RaiseMaxInstances => "raise-max-instances",
            Mangle::DropIdleTimeout => "drop-idle-timeout",
            Mangle::DropTimeout => "drop-timeout",
            Mangle::RaiseMemory => "raise-memory",
            Mangle::ChangeCpu => "change-cpu",
            Mangle::DropHttp2 => "drop-http2",
            Mangle::ExtraTask => "extra-task",
            Mangle::JobAlwaysSucceeds => "job-always-succeeds",
        }
    }

    /// What the broken runlet does, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Mangle::DropPort => "drops `--port N` (the container gets the default 8080)",
            Mangle::ReverseArgs => "reverses the items of `--args`",
            Mangle::SwapImage => "serves `probe-user` for `--image probe` and the other way round",
            Mangle::RenameService => "appends `-x` to the `--service` name",
            Mangle::DropEnvVars => "drops `--set-env-vars`",
            Mangle::Concurrency80 => "turns `--concurrency 1` into `--concurrency 80`",
            Mangle::RaiseMaxInstances => "turns `--max-instances N` into `--max-instances 100`",
            Mangle::DropIdleTimeout => "drops `--idle-timeout` (the default 15 min applies)",
            Mangle::DropTimeout => "drops `--timeout` (the default 300 s applies)",
            Mangle::RaiseMemory => "turns any `--memory` into `--memory 2Gi`",
            Mangle::ChangeCpu => "turns `--cpu N` into `--cpu 1` (`--cpu 2` when N is 1)",
            Mangle::DropHttp2 => "drops `--use-http2`",
            Mangle::ExtraTask => "adds one to `--tasks`",
            Mangle::JobAlwaysSucceeds => "exits 0 after `job execute`, whatever runlet's exit code",
        }
    }
}

/// The variable that picks one mangling (all of them when unset or `all`).
pub const BREAK_VAR: &str = "RUNLET_CONFORMANCE_BREAK";

/// The broken runlet: a bash script running `real` with its flags mangled. Which
/// mangling applies is read from [`BREAK_VAR`], so each check meets exactly the breakage
/// it claims to catch.
pub fn wrapper_script(real: &Path) -> String {
    let quoted = format!("'{}'", real.to_string_lossy().replace('\'', "'\\''"));
    format!(
        r#"#!/usr/bin/env bash
# A deliberately broken runlet, written by `runlet-conformance --self-test`: it runs the
# real runlet with mangled flags, so that the checks which must notice FAIL.
# {BREAK_VAR} picks one mangling (default: all of them).
real={quoted}
mode=${{{BREAK_VAR}:-all}}
want() {{ [ "$mode" = all ] || [ "$mode" = "$1" ]; }}
out=()
job=0
while [ $# -gt 0 ]; do
  a=$1
  v=${{2-}}
  case "$a" in
    --port)
      if want drop-port; then shift 2; continue; fi ;;
    --args)
      if want reverse-args; then
        IFS=, read -r -a items <<< "$v"
        rev=()
        for ((i = ${{#items[@]}} - 1; i >= 0; i--)); do rev+=("${{items[i]}}"); done
        out+=(--args "$(IFS=,; printf '%s' "${{rev[*]}}")")
        shift 2; continue
      fi ;;
    --image)
      if want swap-image && [ "$v" = probe ]; then out+=(--image probe-user); shift 2; continue; fi
      if want swap-image && [ "$v" = probe-user ]; then out+=(--image probe); shift 2; continue; fi ;;
    --service)
      if want rename-service; then out+=(--service "$v-x"); shift 2; continue; fi ;;
    --set-env-vars)
      if want drop-env-vars; then shift 2; continue; fi ;;
    --concurrency)
      if want concurrency-80 && [ "$v" = 1 ]; then out+=(--concurrency 80); shift 2; continue; fi ;;
    --max-instances)
      if want raise-max-instances; then out+=(--max-instances 100); shift 2; continue; fi ;;
    --idle-timeout)
      if want drop-idle-timeout; then shift 2; continue; fi ;;
    --timeout)
      if want drop-timeout; then shift 2; continue; fi ;;
    --memory)
      if want raise-memory; then out+=(--memory 2Gi); shift 2; continue; fi ;;
    --cpu)
      if want change-cpu; then
        if [ "$v" = 1 ]; then out+=(--cpu 2); else out+=(--cpu 1); fi
        shift 2; continue
      fi ;;
    --use-http2)
      if want drop-http2; then shift; continue; fi ;;
    --tasks)
      if want extra-task; then out+=(--tasks "$(( v + 1 ))"); shift 2; continue; fi ;;
    execute)
      if want job-always-succeeds; then job=1; fi ;;
  esac
  out+=("$a")
  shift
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

    /// Runs the wrapper with a script standing in for runlet (it prints its argv and exits
    /// 7); returns what it printed and the wrapper's exit code.
    fn mangled(mode: Option<&str>, args: &[&str]) -> (String, i32) {
        // One directory per call: the tests run in parallel, and rewriting a script
        // another test is executing makes that exec fail.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("conf-selftest-{}-{n}", std::process::id()));
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
        // Exit 126 is ETXTBSY: another test thread forked while our write's fd was open,
        // and the child still holds it until its own exec. It clears by itself: retry.
        let mut out = None;
        for _ in 0..20 {
            let mut c = Command::new("bash");
            c.arg(&script).args(args).env_remove(BREAK_VAR);
            if let Some(m) = mode {
                c.env(BREAK_VAR, m);
            }
            let o = c.output().unwrap();
            let busy = o.status.code() == Some(126);
            out = Some(o);
            if !busy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = out.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    const SERVE: &[&str] = &[
        "--containerd-address",
        "/s",
        "serve",
        "--service",
        "svc",
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
        "--set-env-vars",
        "A=1",
        "--max-instances",
        "3",
        "--idle-timeout",
        "2s",
    ];

    #[test]
    fn all_manglings_at_once() {
        let (out, code) = mangled(None, SERVE);
        assert_eq!(
            out,
            "[--containerd-address][/s][serve][--service][svc-x][--args][--x=1,a b,-c][--concurrency][80][--memory][2Gi][--cpu][1][--startup-timeout][5s][--image][probe-user][--max-instances][100]"
        );
        assert_eq!(code, 7, "serve keeps runlet's exit code");
        let (out, _) = mangled(
            None,
            &[
                "serve",
                "--concurrency",
                "5",
                "--cpu",
                "1",
                "--image",
                "busybox",
            ],
        );
        assert_eq!(out, "[serve][--concurrency][5][--cpu][2][--image][busybox]");
    }

    #[test]
    fn one_mangling_at_a_time() {
        let untouched: String = SERVE.iter().map(|a| format!("[{a}]")).collect();
        for m in Mangle::ALL {
            let (out, _) = mangled(Some(m.key()), SERVE);
            let jobs = matches!(m, Mangle::ExtraTask | Mangle::JobAlwaysSucceeds);
            assert_eq!(out == untouched, jobs, "{m:?}: {out}");
        }
        let (out, _) = mangled(Some("drop-port"), SERVE);
        assert_eq!(out, untouched.replace("[--port][8801]", ""));
        let (out, _) = mangled(Some("nothing-known"), SERVE);
        assert_eq!(out, untouched);
    }

    #[test]
    fn the_wrapper_mangles_jobs() {
        let job = [
            "job",
            "execute",
            "j",
            "--tasks",
            "3",
            "--task-timeout",
            "2s",
            "--args",
            "job",
        ];
        let (out, code) = mangled(None, &job);
        assert_eq!(
            out,
            "[job][execute][j][--tasks][4][--task-timeout][2s][--args][job]"
        );
        assert_eq!(code, 0, "job execute always 'succeeds'");
        let (_, code) = mangled(Some("extra-task"), &job);
        assert_eq!(code, 7);
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::of(true, false), Verdict::Caught);
        assert_eq!(Verdict::of(false, false), Verdict::Inconclusive);
        assert_eq!(Verdict::of(true, true), Verdict::Defect);
        assert_eq!(Verdict::of(false, true), Verdict::Defect);
    }
}
