//! The autoscaler's decision: a plain function from what is observed to what to do.

use std::time::Duration;

/// The service's scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_instances: usize,
    pub max_instances: usize,
    pub concurrency: usize,
    pub idle_timeout: Duration,
}

/// One idle-or-busy instance as the autoscaler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLoad {
    pub in_flight: usize,
    /// How long it has had no request in flight (zero when busy).
    pub idle_for: Duration,
}

/// What the control path observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ready: Vec<InstanceLoad>,
    pub starting: usize,
    pub queued: usize,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Instances to start.
    pub start: usize,
    /// Indexes (into `Observation::ready`) of idle instances to stop.
    pub stop: Vec<usize>,
}

/// Decides how many instances to start and which idle ones to stop.
///
/// Start: enough instances (counting those already starting) that every in-flight and queued
/// request has a slot, and at least `min_instances`, never more than `max_instances`.
/// Stop: instances idle for `idle_timeout` or longer, longest-idle first, never going under
/// `min_instances` and never while requests are queued.
pub fn decide(p: &Policy, o: &Observation) -> Decision {
    let have = o.ready.len() + o.starting;
    let in_flight: usize = o.ready.iter().map(|i| i.in_flight).sum();
    let demand = in_flight + o.queued;
    let wanted_for_load = demand.div_ceil(p.concurrency.max(1));
    let wanted = wanted_for_load.max(p.min_instances).min(p.max_instances);
    let start = wanted.saturating_sub(have);
    let mut stop = Vec::new();
    if start == 0 && o.queued == 0 {
        let mut idle: Vec<(usize, Duration)> = o
            .ready
            .iter()
            .enumerate()
            .filter(|(_, i)| i.in_flight == 0 && i.idle_for >= p.idle_timeout)
            .map(|(n, i)| (n, i.idle_for))
            .collect();
        idle.sort_by_key(|&(_, idle_for)| std::cmp::Reverse(idle_for));
        let keep = p.min_instances.max(wanted_for_load);
        let removable = o.ready.len().saturating_sub(keep);
        stop = idle.into_iter().take(removable).map(|(n, _)| n).collect();
    }
    Decision { start, stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(900);

    fn p(min: usize, max: usize, conc: usize) -> Policy {
        Policy {
            min_instances: min,
            max_instances: max,
            concurrency: conc,
            idle_timeout: IDLE,
        }
    }
    fn busy(n: usize) -> InstanceLoad {
        InstanceLoad {
            in_flight: n,
            idle_for: Duration::ZERO,
        }
    }
    fn idle(secs: u64) -> InstanceLoad {
        InstanceLoad {
            in_flight: 0,
            idle_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            policy: Policy,
            obs: Observation,
            want: Decision,
        }
        let cases = vec![
            Case {
                name: "nothing to do at zero",
                policy: p(0, 100, 80),
                obs: Observation {
                    ready: vec![],
                    starting: 0,
                    queued: 0,
                },
                want: Decision::default(),
            },
            Case {
                name: "scale from zero",
                policy: p(0, 100, 80),
                obs: Observation {
                    ready: vec![],
                    starting: 0,
                    queued: 1,
                },
                want: Decision {
                    start: 1,
                    stop: vec![],
                },
            },
            Case {
                name: "already starting counts",
                policy: p(0, 100, 80),
                obs: Observation {
                    ready: vec![],
                    starting: 1,
                    queued: 5,
                },
                want: Decision::default(),
            },
            Case {
                name: "min instances kept",
                policy: p(2, 100, 80),
                obs: Observation {
                    ready: vec![],
                    starting: 0,
                    queued: 0,
                },
                want: Decision {
                    start: 2,
                    stop: vec![],
                },
            },
            Case {
                name: "scale out when full",
                policy: p(0, 100, 1),
                obs: Observation {
                    ready: vec![busy(1)],
                    starting: 0,
                    queued: 3,
                },
                want: Decision {
                    start: 3,
                    stop: vec![],
                },
            },
            Case {
                name: "capped at max",
                policy: p(0, 2, 1),
                obs: Observation {
                    ready: vec![busy(1)],
                    starting: 0,
                    queued: 10,
                },
                want: Decision {
                    start: 1,
                    stop: vec![],
                },
            },
            Case {
                name: "at max starts nothing",
                policy: p(0, 2, 1),
                obs: Observation {
                    ready: vec![busy(1), busy(1)],
                    starting: 0,
                    queued: 10,
                },
                want: Decision::default(),
            },
            Case {
                name: "idle past timeout stops",
                policy: p(0, 100, 80),
                obs: Observation {
                    ready: vec![idle(901)],
                    starting: 0,
                    queued: 0,
                },
                want: Decision {
                    start: 0,
                    stop: vec![0],
                },
            },
            Case {
                name: "idle below timeout stays",
                policy: p(0, 100, 80),
                obs: Observation {
                    ready: vec![idle(10)],
                    starting: 0,
                    queued: 0,
                },
                want: Decision::default(),
            },
            Case {
                name: "min protects idle",
                policy: p(1, 100, 80),
                obs: Observation {
                    ready: vec![idle(1000), idle(2000)],
                    starting: 0,
                    queued: 0,
                },
                want: Decision {
                    start: 0,
                    stop: vec![1],
                },
            },
            Case {
                name: "busy never stopped",
                policy: p(0, 100, 1),
                obs: Observation {
                    ready: vec![busy(1), idle(1000)],
                    starting: 0,
                    queued: 0,
                },
                want: Decision {
                    start: 0,
                    stop: vec![1],
                },
            },
            Case {
                name: "queued blocks scale-in",
                policy: p(0, 1, 1),
                obs: Observation {
                    ready: vec![idle(1000)],
                    starting: 0,
                    queued: 1,
                },
                want: Decision::default(),
            },
        ];
        for c in cases {
            assert_eq!(decide(&c.policy, &c.obs), c.want, "{}", c.name);
        }
    }
}
