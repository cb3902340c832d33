//! Property tests of the flag parsers (proptest): whatever text a user or a script passes,
//! a parser answers with a value or a [`SpecError`] naming the flag, never a panic; and what
//! a parser accepts reads back as the value written.

use std::time::Duration;

use proptest::prelude::*;

use super::flags::ServiceFlags;
use super::quantity::memory_quantity;
use super::*;

/// Text shaped like flag values, and any text at all.
fn flag_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,40}(\\.[0-9]{0,5})?(e[0-9]{1,3})?(ms|s|m|h|Ki|Mi|Gi|k|M|G)?",
        "[-a-zA-Z0-9.=,/_^: ]{0,60}",
        "(httpGet\\.path|tcpSocket\\.port|grpc\\.port|periodSeconds|failureThreshold|timeoutSeconds|initialDelaySeconds)=[-0-9a-z/]{0,25}(,[a-zA-Z.]{1,20}=[0-9]{0,25}){0,3}",
        "(name|type|size-limit|volume|mount-path)=[-a-z0-9/.]{0,25}(,(name|type|size-limit|volume|mount-path)=[-a-z0-9/.]{0,25}){0,3}",
    ]
}

/// Every flag set to `s`: the check a `runlet serve` or `runlet deploy` makes.
fn all_flags(s: &str) -> ServiceFlags {
    let one = || Some(s.to_string());
    ServiceFlags {
        image: s.to_string(),
        port: None,
        set_env_vars: vec![s.to_string()],
        env: Default::default(),
        command: one(),
        args: one(),
        memory: one(),
        cpu: one(),
        concurrency: None,
        timeout: one(),
        min_instances: None,
        max_instances: None,
        startup_probe: one(),
        liveness_probe: one(),
        add_volume: vec![s.to_string()],
        add_volume_mount: vec![s.to_string()],
        use_http2: false,
        cpu_throttling: None,
        secrets: Default::default(),
        containers: Vec::new(),
        execution_environment: one(),
    }
}

/// `a` and `b` within a nanosecond (a float's rounding).
fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_nanos(1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_text_makes_a_parser_panic(s in flag_text()) {
        let _ = parse_duration("--timeout", &s);
        if let Err(e) = duration_in("--timeout", &s, (1, 3600)) {
            prop_assert_eq!(e.field, "--timeout");
        }
        let _ = memory("--memory", &s);
        let _ = memory_quantity("size-limit", &s);
        let _ = cpu("--cpu", &s);
        let _ = probe::parse("--startup-probe", &s, 8080);
        let _ = split_list(&s);
        let _ = parse_env_vars(std::slice::from_ref(&s));
        let _ = check_name("--service", &s, 49);
        let _ = name_from_image(&s);
        let _ = volumes(std::slice::from_ref(&s), std::slice::from_ref(&s), 512 << 20);
        let _ = all_flags(&s).check();
        let mut flags = all_flags("probe");
        flags.timeout = Some(s.clone());
        if let Err(e) = flags.check() {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn durations_read_back(n in 0u64..=100_000_000, unit in prop::sample::select(vec!["", "s", "ms", "m", "h"])) {
        let want = match unit {
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => Duration::from_secs(n),
        };
        let got = parse_duration("--timeout", &format!("{n}{unit}")).unwrap();
        prop_assert!(close(got, want), "{n}{unit}: {got:?}");
    }

    #[test]
    fn a_duration_is_in_range_or_refused_naming_the_range(digits in "[0-9]{1,60}", unit in prop::sample::select(vec!["", "s", "m", "h"])) {
        let text = format!("{digits}{unit}");
        let scale = match unit { "m" => 60.0, "h" => 3600.0, _ => 1.0 };
        let secs = digits.parse::<f64>().unwrap() * scale;
        match duration_in("--timeout", &text, (1, 3600)) {
            Ok(d) => prop_assert!((1.0..=3600.0).contains(&secs) && close(d, Duration::from_secs_f64(secs))),
            Err(e) => {
                prop_assert!(!(1.0..=3600.0).contains(&secs), "{text} refused: {e}");
                prop_assert_eq!(e.field, "--timeout");
                prop_assert!(e.detail.contains("allowed 1s to 3600s"), "{}", e.detail);
            }
        }
    }

    #[test]
    fn sizes_read_back(n in 1u64..=u32::MAX as u64, unit in prop::sample::select(vec![("", 1u64), ("k", 1000), ("Ki", 1 << 10), ("M", 1_000_000), ("Mi", 1 << 20), ("G", 1_000_000_000), ("Gi", 1 << 30)])) {
        let (suffix, mult) = unit;
        prop_assert_eq!(memory_quantity("size-limit", &format!("{n}{suffix}")).unwrap(), n * mult);
        let in_range = (6u64 << 20..=32 << 30).contains(&(n * mult));
        prop_assert_eq!(memory("--memory", &format!("{n}{suffix}")).is_ok(), in_range);
    }

    #[test]
    fn cpus_read_back(milli in 80u32..=8000) {
        prop_assert_eq!(cpu("--cpu", &format!("{milli}m")).unwrap(), f64::from(milli) / 1000.0);
        let whole = f64::from(milli / 1000);
        if whole >= 1.0 {
            prop_assert_eq!(cpu("--cpu", &whole.to_string()).unwrap(), whole);
        }
    }
}
