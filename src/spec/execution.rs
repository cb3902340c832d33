//! The execution environment of a service's instances (gcloud's
//! `--execution-environment gen1|gen2`, the Admin API's `executionEnvironment`): gen2 runs
//! the containers with runc (full Linux), gen1 under gVisor ([`crate::runtime::gvisor`]).
//!
//! Cloud Run picks one when a service names none; runlet picks gen2, Cloud Run's choice for
//! everything that needs full Linux compatibility and the only one of jobs (Cloud Run's jobs
//! cannot be changed to gen1, so runlet refuses gen1 for a job).

use super::{bad, SpecError};
use crate::pb::run_v2 as v2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionEnvironment {
    /// gVisor (`runsc`).
    Gen1,
    /// runc.
    #[default]
    Gen2,
}

impl ExecutionEnvironment {
    /// The flag's value (`gen1`, `gen2`).
    pub fn parse(field: &'static str, text: &str) -> Result<Self, SpecError> {
        match text {
            "gen1" => Ok(Self::Gen1),
            "gen2" => Ok(Self::Gen2),
            _ => Err(bad(
                field,
                format!("{text:?}: allowed values are gen1, gen2"),
            )),
        }
    }

    /// From the Admin API's enum (`UNSPECIFIED`: the default, gen2).
    pub fn from_v2(field: &'static str, value: i32) -> Result<Self, SpecError> {
        match v2::ExecutionEnvironment::try_from(value) {
            Ok(v2::ExecutionEnvironment::Gen1) => Ok(Self::Gen1),
            Ok(v2::ExecutionEnvironment::Gen2 | v2::ExecutionEnvironment::Unspecified) => {
                Ok(Self::Gen2)
            }
            Err(_) => Err(bad(field, format!("unknown value {value}"))),
        }
    }

    /// The Admin API's enum value.
    pub fn to_v2(self) -> v2::ExecutionEnvironment {
        match self {
            Self::Gen1 => v2::ExecutionEnvironment::Gen1,
            Self::Gen2 => v2::ExecutionEnvironment::Gen2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gen1 => "gen1",
            Self::Gen2 => "gen2",
        }
    }
}

/// Refuses gen1 for a job: Cloud Run's jobs only run in the second generation.
pub fn job_environment(field: &'static str, env: ExecutionEnvironment) -> Result<(), SpecError> {
    match env {
        ExecutionEnvironment::Gen2 => Ok(()),
        ExecutionEnvironment::Gen1 => Err(bad(
            field,
            "Cloud Run jobs only run in the second generation execution environment (gen2); gen1 (gVisor) is for services",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExecutionEnvironment::*;

    #[test]
    fn flag_values() {
        let f = "--execution-environment";
        assert_eq!(ExecutionEnvironment::parse(f, "gen1"), Ok(Gen1));
        assert_eq!(ExecutionEnvironment::parse(f, "gen2"), Ok(Gen2));
        for bad in ["", "GEN1", "gen3", "gvisor"] {
            let e = ExecutionEnvironment::parse(f, bad).unwrap_err();
            assert_eq!(e.field, f);
            assert!(e.detail.contains("gen1, gen2"), "{e}");
        }
        assert_eq!(ExecutionEnvironment::default(), Gen2);
    }

    #[test]
    fn api_values() {
        let f = "service.template.executionEnvironment";
        let table = [(0, Gen2), (1, Gen1), (2, Gen2)];
        for (v, want) in table {
            assert_eq!(ExecutionEnvironment::from_v2(f, v), Ok(want), "{v}");
        }
        assert!(ExecutionEnvironment::from_v2(f, 3).is_err());
        for e in [Gen1, Gen2] {
            assert_eq!(ExecutionEnvironment::from_v2(f, e.to_v2() as i32), Ok(e));
        }
    }

    #[test]
    fn jobs_refuse_gen1() {
        assert!(job_environment("--execution-environment", Gen2).is_ok());
        let e = job_environment("--execution-environment", Gen1).unwrap_err();
        assert!(e.detail.contains("gen2"), "{e}");
    }
}
