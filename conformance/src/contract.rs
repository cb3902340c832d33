//! The contract clauses as data: `contract/clauses.toml`, embedded at build time so the
//! suite's binary carries the statements and SKIP reasons it prints.
//!
//! The file is the only source of SKIP reasons: a clause that cannot apply to a single
//! node says why in `not_applicable`, a part of a clause that is not checked says why under
//! `[clause.skip]`. The unit tests below hold the file to the contract's list of IDs and
//! to the suite's registry of checks.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The embedded `contract/clauses.toml`.
pub const CLAUSES_TOML: &str = include_str!("../../contract/clauses.toml");

/// Who a clause applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applies {
    Services,
    Jobs,
    Both,
}

impl fmt::Display for Applies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applies::Services => "services",
            Applies::Jobs => "jobs",
            Applies::Both => "both",
        })
    }
}

/// How strongly the contract asks it of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Level {
    #[serde(rename = "MUST")]
    Must,
    #[serde(rename = "SHOULD")]
    Should,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        })
    }
}

/// One clause of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    pub id: String,
    /// The clause in one line, in our words.
    pub statement: String,
    pub applies: Applies,
    pub level: Level,
    /// Why the whole clause cannot apply to a single node (then it has no checks).
    #[serde(default)]
    pub not_applicable: Option<String>,
    /// Parts of the clause that are not checked: check name → reason.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    /// Checks that need what only runlet's own command line offers (a flag the Admin API
    /// has no field for, `runlet image load`, ...): check name → reason. They run under the
    /// CLI driver and SKIP, with the reason, under the API driver only.
    #[serde(default)]
    pub runlet_only: BTreeMap<String, String>,
    /// Checks that cannot apply under gVisor (`--execution-environment gen1`): check name →
    /// reason. They SKIP, with the reason, when the suite runs with
    /// `--execution-environment gen1` only.
    #[serde(default)]
    pub gen2_only: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    clause: Vec<Clause>,
}

/// The parsed contract, clauses in file order.
#[derive(Debug, Clone)]
pub struct Contract {
    pub clauses: Vec<Clause>,
}

/// `clauses.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("contract/clauses.toml: {0}")]
    Parse(String),
    #[error("contract/clauses.toml: clause {0} appears twice")]
    Duplicate(String),
    #[error("contract/clauses.toml: clause {id} has an empty {field}")]
    Empty { id: String, field: &'static str },
}

impl Contract {
    /// Parses and checks `text` (the format of `contract/clauses.toml`).
    pub fn parse(text: &str) -> Result<Contract, ContractError> {
        let file: File = toml::from_str(text).map_err(|e| ContractError::Parse(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for c in &file.clause {
            if !seen.insert(c.id.clone()) {
                return Err(ContractError::Duplicate(c.id.clone()));
            }
            let empty = |field| ContractError::Empty {
                id: c.id.clone(),
                field,
            };
            if c.statement.trim().is_empty() {
                return Err(empty("statement"));
            }
            if c.not_applicable
                .as_deref()
                .is_some_and(|r| r.trim().is_empty())
            {
                return Err(empty("not_applicable"));
            }
            if c.skip.values().any(|r| r.trim().is_empty()) {
                return Err(empty("skip reason"));
            }
            if c.runlet_only.values().any(|r| r.trim().is_empty()) {
                return Err(empty("runlet_only reason"));
            }
            if c.gen2_only.values().any(|r| r.trim().is_empty()) {
                return Err(empty("gen2_only reason"));
            }
        }
        Ok(Contract {
            clauses: file.clause,
        })
    }

    /// The embedded contract. It is checked by this crate's unit tests, so a failure here
    /// means the binary was built from a broken tree.
    pub fn embedded() -> Result<Contract, ContractError> {
        Contract::parse(CLAUSES_TOML)
    }

    pub fn get(&self, id: &str) -> Option<&Clause> {
        self.clauses.iter().find(|c| c.id == id)
    }

    /// The reason check `id` (`CLAUSE/name`) is runlet-only, if it is.
    pub fn runlet_only(&self, id: &str) -> Option<&str> {
        let (clause, name) = id.split_once('/')?;
        self.get(clause)?.runlet_only.get(name).map(String::as_str)
    }

    /// The reason check `id` (`CLAUSE/name`) cannot apply under gVisor, if it cannot.
    pub fn gen2_only(&self, id: &str) -> Option<&str> {
        let (clause, name) = id.split_once('/')?;
        self.get(clause)?.gen2_only.get(name).map(String::as_str)
    }

    /// Position of a clause in the file (the order of the tables).
    pub fn position(&self, id: &str) -> usize {
        self.clauses
            .iter()
            .position(|c| c.id == id)
            .unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks;
    use std::collections::BTreeSet;

    /// The IDs of shared/contract.md, in its order. Copied here on purpose: CI's clone may
    /// not have shared/ beside it, and a change to the contract should be a visible change
    /// to this list too.
    const CONTRACT_IDS: &[&str] = &[
        "IMG-1", "IMG-2", "IMG-3", "PORT-1", "PORT-2", "PORT-3", "JOB-1", "JOB-2", "TLS-1",
        "TLS-2", "RESP-1", "ENV-S1", "ENV-J1", "HDR-1", "HDR-2", "FS-1", "FS-2", "FS-3", "FS-4",
        "LIFE-1", "LIFE-2", "LIFE-3", "LIFE-4", "LIFE-5", "LIFE-6", "LIFE-7", "LIFE-8", "LIFE-9",
        "LIFE-J1", "LIFE-J2", "RES-1", "RES-2", "RES-3", "SBX-1", "SBX-2", "META-1", "META-2",
        "NAME-1", "OUT-1",
    ];

    #[test]
    fn the_file_lists_exactly_the_contracts_ids_in_order() {
        let c = Contract::embedded().unwrap();
        let ids: Vec<&str> = c.clauses.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, CONTRACT_IDS);
    }

    #[test]
    fn every_clause_has_a_check_or_a_reason() {
        let c = Contract::embedded().unwrap();
        let registry = checks::all();
        for clause in &c.clauses {
            let n = registry.iter().filter(|k| k.clause == clause.id).count();
            match &clause.not_applicable {
                Some(_) => assert_eq!(
                    n, 0,
                    "{} is marked not applicable but has {n} registered check(s)",
                    clause.id
                ),
                None => assert!(
                    n > 0,
                    "{} has no conformance check and no not_applicable reason",
                    clause.id
                ),
            }
        }
    }

    #[test]
    fn every_check_names_a_clause_and_skips_name_no_registered_check() {
        let c = Contract::embedded().unwrap();
        let registry = checks::all();
        let mut ids = BTreeSet::new();
        for k in &registry {
            let clause = c
                .get(k.clause)
                .unwrap_or_else(|| panic!("check {} names no clause", k.id()));
            assert!(ids.insert(k.id()), "check {} registered twice", k.id());
            assert!(
                !clause.skip.contains_key(k.name),
                "{} is both registered and skipped",
                k.id()
            );
        }
        for clause in &c.clauses {
            for name in clause.gen2_only.keys() {
                assert!(
                    registry
                        .iter()
                        .any(|k| k.clause == clause.id && k.name == name),
                    "{}: gen2_only names {name}, which is not a registered check of the clause",
                    clause.id
                );
            }
            for name in clause.runlet_only.keys() {
                assert!(
                    registry
                        .iter()
                        .any(|k| k.clause == clause.id && k.name == name),
                    "{}: runlet_only names {name}, which is not a registered check of the clause",
                    clause.id
                );
            }
            for name in clause.skip.keys() {
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{}: skip name {name:?} should be kebab-case",
                    clause.id
                );
            }
        }
    }

    /// docs/conformance.md lists the runlet-only checks by hand: it must name each one.
    #[test]
    fn the_doc_names_every_runlet_only_check() {
        let doc = include_str!("../../docs/conformance.md");
        let section = doc
            .split("### Runlet-only checks")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("docs/conformance.md has a \"### Runlet-only checks\" section");
        for c in &Contract::embedded().unwrap().clauses {
            for name in c.runlet_only.keys() {
                let id = format!("`{}/{name}`", c.id);
                assert!(
                    section.contains(&id),
                    "docs/conformance.md does not list {id}"
                );
            }
        }
    }

    #[test]
    fn parse_refuses_duplicates_unknown_fields_and_empty_reasons() {
        let one =
            "[[clause]]\nid = \"A-1\"\nstatement = \"s\"\napplies = \"both\"\nlevel = \"MUST\"\n";
        assert!(Contract::parse(one).is_ok());
        assert!(matches!(
            Contract::parse(&format!("{one}{one}")),
            Err(ContractError::Duplicate(_))
        ));
        assert!(Contract::parse(&one.replace("both", "everyone")).is_err());
        assert!(Contract::parse(&one.replace("MUST", "MAY")).is_err());
        assert!(Contract::parse(&format!("{one}colour = \"red\"\n")).is_err());
        assert!(matches!(
            Contract::parse(&format!("{one}not_applicable = \" \"\n")),
            Err(ContractError::Empty { .. })
        ));
        assert!(matches!(
            Contract::parse(&format!("{one}[clause.skip]\nx = \"\"\n")),
            Err(ContractError::Empty { .. })
        ));
        assert!(matches!(
            Contract::parse(&format!("{one}[clause.runlet_only]\nx = \" \"\n")),
            Err(ContractError::Empty { .. })
        ));
        let only = Contract::parse(&format!("{one}[clause.runlet_only]\nx = \"why\"\n")).unwrap();
        assert_eq!(only.runlet_only("A-1/x"), Some("why"));
        assert_eq!(only.runlet_only("A-1/y"), None);
        let with_skip = Contract::parse(&format!("{one}[clause.skip]\npart = \"why\"\n")).unwrap();
        assert_eq!(with_skip.clauses[0].skip["part"], "why");
    }
}
