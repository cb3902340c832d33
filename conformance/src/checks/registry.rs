//! Every check, in one table (grouped by area, in the order the report and
//! docs/conformance.md list them): its clause, its name, what it verifies, the function that
//! runs it, and the broken-runlet mangling it must catch.

use super::{
    check, fs, image, jobs, lifecycle, metadata, outbound, port_env, requests, resources, sandbox,
    sidecars, Check,
};
use crate::selftest::Mangle;

/// Every check.
pub fn all() -> Vec<Check> {
    vec![
        check!("IMG-1", "busybox-base-image", "another base image (static busybox) serves: its httpd answers through runlet", image::busybox_base_image),
        check!("IMG-1", "command-and-args", "argv is exactly --command followed by --args, in order", image::command_and_args)
            .breaks_with(Mangle::ReverseArgs),
        check!("IMG-1", "args-keep-entrypoint", "--args alone replaces the image's Cmd and keeps its Entrypoint", image::args_keep_entrypoint),
        check!("IMG-1", "workdir-from-image", "the image's WorkingDir (/tmp) is the process's working directory", image::workdir_from_image)
            .breaks_with(Mangle::SwapImage),
        check!("IMG-1", "user-from-image", "the image's USER (65534:65534) is the process's uid and gid", image::user_from_image)
            .breaks_with(Mangle::SwapImage),
        check!("IMG-1", "no-user-runs-as-root", "an image with no USER runs as uid 0, gid 0 (as Docker and Cloud Run do)", image::no_user_runs_as_root)
            .breaks_with(Mangle::SwapImage),
        check!("IMG-2", "oci-archive", "an OCI image-layout archive loads and serves", image::oci_archive),
        check!("IMG-2", "docker-archive", "a docker-save archive (manifest schema 2) loads and serves", image::docker_archive),
        check!("IMG-2", "docker-schema-1", "a Docker schema-1 signed manifest (skopeo --format v2s1, in a registry on loopback) is pulled, converted and serves", image::docker_schema_1),
        check!("IMG-3", "index-selects-amd64", "an index with linux/arm64 and linux/amd64 loads and serves the amd64 image", image::index_selects_amd64),
        check!("IMG-3", "index-without-amd64-refused", "an index without linux/amd64 is refused at load, naming linux/amd64, and no image is created", image::index_without_amd64_refused),
        check!("NAME-1", "non-utf8-refused", "an image with a non-UTF-8 file name is refused at load with an error saying so, and no image is created", image::non_utf8_refused),
        check!("PORT-1", "one-container-per-instance", "a serving instance is exactly one container in containerd", port_env::one_container_per_instance),
        check!("PORT-1", "sidecars", "--container app (--port) and --container side: one instance is two containers, served by the ingress one", sidecars::sidecars),
        check!("PORT-2", "default-port-8080", "without --port the container gets PORT=8080, listens there, and is served", port_env::default_port_8080),
        check!("PORT-2", "configured-port", "with --port 8801 the container listens on 0.0.0.0:8801 and runlet routes requests there", port_env::configured_port)
            .breaks_with(Mangle::DropPort),
        check!("ENV-S1", "port-equals-configured", "PORT equals --port (8801, not the default)", port_env::port_equals_configured)
            .breaks_with(Mangle::DropPort),
        check!("ENV-S1", "k-vars-match-names", "K_SERVICE and K_CONFIGURATION equal the service name, K_REVISION the revision runlet reports", port_env::k_vars_match_names)
            .breaks_with(Mangle::RenameService),
        check!("PORT-3", "absent-in-sidecars", "a sidecar has K_SERVICE and no PORT (its env read back through a shared in-memory volume)", sidecars::absent_in_sidecars),
        check!("PORT-3", "absent-in-jobs", "a job's container has no PORT variable", jobs::absent_in_jobs),
        check!("JOB-1", "exit-0-succeeds", "tasks that exit 0 make the execution succeed (runlet exits 0)", jobs::exit_0_succeeds),
        check!("JOB-1", "non-zero-fails", "a task that exits 3 (no retries) makes the execution fail (runlet exits non-zero)", jobs::non_zero_fails)
            .breaks_with(Mangle::JobAlwaysSucceeds),
        check!("JOB-2", "completes-without-listening", "a task that never listens on any port runs and completes", jobs::completes_without_listening),
        check!("ENV-J1", "task-variables", "with --tasks 3 --parallelism 2: CLOUD_RUN_JOB, one CLOUD_RUN_EXECUTION, indexes 0..2, attempt 0, count 3", jobs::task_variables)
            .breaks_with(Mangle::ExtraTask),
        check!("ENV-J1", "attempt-counts-retries", "a task failing twice then succeeding sees CLOUD_RUN_TASK_ATTEMPT 0, 1, 2", jobs::attempt_counts_retries)
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-J1", "runs-until-exit", "a task runs until its container exits (3 s here), and the execution waits for it", jobs::runs_until_exit)
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-J2", "task-timeout-sigterm-then-sigkill", "past --task-timeout a task ignoring SIGTERM gets SIGTERM, then SIGKILL 10 s later, and fails", jobs::task_timeout_sigterm_then_sigkill)
            .slow()
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-J2", "over-memory-limit-fails", "a task allocating 256 MiB under --memory 64Mi is terminated and fails", jobs::over_memory_limit_fails),
        check!("SBX-2", "job-pid-1", "a job's code runs as PID 1 of its container", jobs::job_pid_1),
        check!("TLS-1", "http1-to-container", "the container gets HTTP/1.1 whether the client speaks HTTP/1.1 or h2c", requests::http1_to_container),
        check!("TLS-1", "forwarding-headers", "Host is kept, Forwarded parses (RFC 7239), X-Forwarded-For is a list of IPs ending with the client, X-Forwarded-Proto is http or https", requests::forwarding_headers),
        check!("TLS-2", "h2c-end-to-end", "with --use-http2 the container gets HTTP/2 cleartext (h2c)", requests::h2c_end_to_end)
            .breaks_with(Mangle::DropHttp2),
        check!("HDR-1", "bad-names-400", "header names with a space, DEL or non-ASCII bytes get 400 with a body, and never reach the container", requests::bad_names_400),
        check!("HDR-2", "bad-values-400", "header values with a control byte, DEL or non-ASCII bytes get 400 with a body, and never reach the container", requests::bad_values_400),
        check!("HDR-2", "valid-headers-unchanged", "a user header (spaces, tab, punctuation) and traceparent arrive unchanged; a traceparent is created when absent", requests::valid_headers_unchanged),
        check!("RESP-1", "within-timeout-200", "with --timeout 10, a request taking 2 s gets 200", requests::within_timeout_200),
        check!("RESP-1", "past-timeout-504", "with --timeout 10, a request taking 12 s gets 504 at 10 s", requests::past_timeout_504)
            .slow()
            .breaks_with(Mangle::DropTimeout),
        check!("RESP-1", "streamed-body-cut-at-timeout", "with --timeout 10, a response whose headers were flushed keeps 200 and its body is cut at 10 s", requests::streamed_body_cut_at_timeout)
            .slow()
            .breaks_with(Mangle::DropTimeout),
        check!("RESP-1", "timeout-includes-startup", "with --timeout 3, a request that must wait for a 6 s start-up (from zero instances) gets 504 at 3 s", requests::timeout_includes_startup)
            .slow()
            .breaks_with(Mangle::DropTimeout),
        check!("FS-1", "tmp-writable", "/tmp exists, is a directory with mode 1777 or 0777, and a file can be created in it", fs::tmp_writable),
        check!("FS-1", "root-writable", "a 1 MiB file can be written at / (the root filesystem) and read back", fs::root_writable),
        check!("FS-2", "root-writes-count-against-memory", "writing 256 MiB to / under --memory 128Mi fails: the root filesystem is in memory", fs::root_writes_count_against_memory)
            .breaks_with(Mangle::RaiseMemory),
        check!("FS-2", "tmp-writes-count-against-memory", "writing 256 MiB to /tmp under --memory 128Mi fails: /tmp is in memory", fs::tmp_writes_count_against_memory)
            .breaks_with(Mangle::RaiseMemory),
        check!("FS-3", "writes-do-not-survive", "files written to / and /tmp are gone when the service runs again", fs::writes_do_not_survive),
        check!("FS-4", "memory-volume-size-limit", "--add-volume type=in-memory,size-limit=32Mi mounted at /scratch: 16 MiB fit, 64 MiB do not", fs::memory_volume_size_limit),
        check!("SBX-1", "gen1-lacks-syscalls", "with --execution-environment gen1 the code runs under gVisor: sched_getattr (implemented by Linux) answers ENOSYS, ordinary calls work", sandbox::gen1_lacks_syscalls),
        check!("SBX-1", "gen2-has-them", "by default (gen2) sched_getattr works", sandbox::gen2_has_them),
        check!("SBX-2", "pid-1", "the service's code runs as PID 1 of its container", fs::pid_1),
        check!("SBX-2", "stdin-eof", "reading stdin returns EOF at once", fs::stdin_eof),
        check!("SBX-2", "dev-files", "/dev/fd and /dev/std{in,out,err} link to /proc/self/fd; null, zero, random, urandom, full, ptmx, tty exist; console does not", fs::dev_files),
        check!("SBX-2", "proc-sys-read-only", "/proc/sys is mounted read-only", fs::proc_sys_read_only),
        check!("SBX-2", "etc-resolv-conf", "/etc/resolv.conf exists and is readable", fs::etc_resolv_conf),
        check!("SBX-2", "etc-hosts-own-hostname", "/etc/hosts maps the container's own hostname to an address", fs::etc_hosts_own_hostname),
        check!("LIFE-1", "scales-out-under-load", "--concurrency 1 --max-instances 3: 3 simultaneous requests are served by more than one instance", lifecycle::scales_out_under_load)
            .breaks_with(Mangle::Concurrency80),
        check!("LIFE-1", "scales-in-to-min-instances", "after a burst, idle instances go down to --min-instances 1, and that one stays", lifecycle::scales_in_to_min_instances)
            .slow()
            .breaks_with(Mangle::DropIdleTimeout),
        check!("LIFE-1", "scales-to-zero-and-back", "with no traffic the service goes to zero instances; the next request starts one and gets 200", lifecycle::scales_to_zero_and_back)
            .slow()
            .breaks_with(Mangle::DropIdleTimeout),
        check!("LIFE-2", "waits-for-listen", "an instance that listens after 3 s is served once it listens", lifecycle::waits_for_listen)
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-2", "never-listening-fails", "an instance that never listens fails serve after --startup-timeout with an error naming the port", lifecycle::never_listening_fails)
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-2", "exit-at-startup-clear-error", "a container exiting with code 5 at start-up fails serve with an error giving the exit code", lifecycle::exit_at_startup_clear_error)
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-2", "missing-image-clear-error", "serving an image that was never loaded fails with an error naming it", lifecycle::missing_image_clear_error),
        check!("LIFE-2", "startup-timeout-at-most-4m", "--startup-timeout above 4 minutes is refused, naming the flag", lifecycle::startup_timeout_at_most_4m),
        check!("LIFE-3", "held-while-busy", "--concurrency 1 --max-instances 1: a request arriving while the instance is busy is held, then served", lifecycle::held_while_busy)
            .breaks_with(Mangle::RaiseMaxInstances),
        check!("LIFE-3", "hold-expires-after-10s", "--concurrency 1 --max-instances 1: a request held behind a 15 s one is refused after 10 s", lifecycle::hold_expires_after_10s)
            .slow()
            .breaks_with(Mangle::RaiseMaxInstances),
        check!("LIFE-3", "held-through-slow-startup", "instances take 12 s to start: a request arriving at zero instances is held until one is up (past 10 s), then served", lifecycle::held_through_slow_startup)
            .slow()
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-4", "start-order", "--depends-on: the ingress container starts once the sidecar it depends on passed its startup probe (it fetches the sidecar's report from localhost at start)", sidecars::start_order),
        check!("LIFE-5", "cpu-during-request", "while a request is in flight the container is not frozen, has its CPU quota, and answers", lifecycle::cpu_during_request),
        check!("LIFE-5", "cpu-during-request-throttled", "with --cpu-throttling, a request in flight gets the full CPU quota back", lifecycle::cpu_during_request_throttled),
        check!("LIFE-6", "idle-instance-stopped", "--idle-timeout 3s: an idle instance is stopped after about 3 s, not before", lifecycle::idle_instance_stopped)
            .slow()
            .breaks_with(Mangle::DropIdleTimeout),
        check!("LIFE-6", "idle-timeout-at-most-15m", "--idle-timeout above 15 minutes is refused, naming the flag", lifecycle::idle_timeout_at_most_15m),
        check!("LIFE-7", "in-flight-finish-on-shutdown", "on shutdown a request in flight completes with 200, and new requests are not served", lifecycle::in_flight_finish_on_shutdown),
        check!("LIFE-8", "sigterm-then-sigkill-after-10s", "on shutdown a container ignoring SIGTERM gets it at once, then SIGKILL 10 s later", lifecycle::sigterm_then_sigkill_after_10s)
            .slow()
            .breaks_with(Mangle::DropEnvVars),
        check!("LIFE-8", "sigterm-grace-used", "on shutdown a container taking 3 s to exit after SIGTERM gets those 3 s", lifecycle::sigterm_grace_used)
            .breaks_with(Mangle::DropEnvVars),
        check!("RES-1", "cpu-limit-visible", "with --cpu 2 the container reads a CPU limit of 2 vCPUs (cpu.max or cfs quota/period)", resources::cpu_limit_visible)
            .breaks_with(Mangle::ChangeCpu),
        check!("RES-1", "default-one-vcpu", "without --cpu the container reads a CPU limit of 1 vCPU", resources::default_one_vcpu),
        check!("RES-2", "memory-limit-visible", "with --memory 256Mi the container reads a memory limit of 268435456 bytes", resources::memory_limit_visible)
            .breaks_with(Mangle::RaiseMemory),
        check!("RES-2", "default-512mi", "without --memory the container reads a memory limit of 512 MiB", resources::default_512mi),
        check!("RES-2", "limits-read-only", "the container cannot open its memory limit for writing, and its cgroup mounts are read-only", resources::limits_read_only),
        check!("RES-2", "alloc-below-limit-200", "allocating and touching 100 MiB under --memory 256Mi succeeds (200)", resources::alloc_below_limit_200),
        check!("RES-2", "alloc-above-limit-refused", "a request allocating 512 MiB under --memory 128Mi does not succeed (the limit holds)", resources::alloc_above_limit_refused)
            .breaks_with(Mangle::RaiseMemory),
        check!("LIFE-9", "over-memory-limit-500", "a request allocating 512 MiB under --memory 128Mi, and one in flight beside it, end with 500", resources::over_memory_limit_500)
            .breaks_with(Mangle::RaiseMemory),
        check!("LIFE-9", "child-over-memory-limit-500", "a child process allocating 512 MiB under --memory 128Mi while its server (ignoring SIGTERM) holds the request: it and one beside it end with 500 within 5 s", resources::child_over_memory_limit_500)
            .breaks_with(Mangle::RaiseMemory),
        check!("LIFE-9", "child-over-memory-limit-cuts-stream", "a streamed response whose headers were sent is cut within 5 s when a child process goes over --memory 128Mi", resources::child_over_memory_limit_cuts_stream)
            .breaks_with(Mangle::RaiseMemory),
        check!("RES-3", "concurrency-1-no-overlap", "--concurrency 1: 5 clients for 20 s never overlap inside any instance", resources::concurrency_1_no_overlap)
            .slow()
            .breaks_with(Mangle::Concurrency80),
        check!("RES-3", "default-concurrent", "by default one instance receives several requests at once", resources::default_concurrent),
        check!("META-1", "metadata-flavor", "metadata.google.internal answers with Metadata-Flavor: Google and refuses (403) without it", metadata::flavor_required),
        check!("META-2", "metadata-values", "project id and number, region, zone, instance id, service account email and (with --token-command) token are served", metadata::values),
        check!("OUT-1", "outbound-http", "a container can open an HTTP connection to a server outside it (on this host's address)", outbound::outbound_http),
    ]
}
