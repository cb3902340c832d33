//! The decisions of an execution, as plain functions with no I/O: what an attempt's end
//! means for its task ([`next_action`]), and which task attempts may start now
//! ([`Scheduler`]: at most `parallelism` at once, retries before fresh tasks).

use std::collections::VecDeque;

use thiserror::Error;

use crate::runtime::ExitStatus;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The container's main process exited by itself.
    Exited(ExitStatus),
    /// It exited after going over its memory limit (the kernel's OOM killer).
    OutOfMemory(ExitStatus),
    /// Stopped after the task timeout (SIGTERM, SIGKILL 10 s later); the status if seen.
    TimedOut(Option<ExitStatus>),
    /// Stopped because the execution was cancelled.
    Cancelled(Option<ExitStatus>),
    /// The attempt could not run or be watched (network, create, start, wait).
    RuntimeError(String),
}

impl Outcome {
    /// JOB-1: a task succeeds by exiting 0, and only by exiting by itself.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(s) if s.code == 0)
    }

    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            Outcome::Exited(s) | Outcome::OutOfMemory(s) => Some(*s),
            Outcome::TimedOut(s) | Outcome::Cancelled(s) => *s,
            Outcome::RuntimeError(_) => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = |s: &Option<ExitStatus>| match s {
            Some(s) => format!(" ({s})"),
            None => String::new(),
        };
        match self {
            Outcome::Exited(s) => write!(f, "{s}"),
            Outcome::OutOfMemory(s) => write!(f, "out of memory ({s})"),
            Outcome::TimedOut(s) => write!(f, "task timeout reached{}", status(s)),
            Outcome::Cancelled(s) => write!(f, "cancelled{}", status(s)),
            Outcome::RuntimeError(e) => write!(f, "{e}"),
        }
    }
}

/// What happens to a task after one of its attempts ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Succeed,
    /// Run again as a fresh container, with this attempt number.
    Retry {
        attempt: u32,
    },
    Fail,
    Cancel,
}

/// The decision for a task whose attempt number `attempt` (0-based) ended with `outcome`:
/// success ends the task; once the execution is being cancelled nothing is retried; a
/// failure is retried while `attempt < max_retries` (so `max_retries + 1` attempts at most).
pub fn next_action(attempt: u32, max_retries: u32, outcome: &Outcome, cancelling: bool) -> Action {
    if outcome.succeeded() {
        Action::Succeed
    } else if cancelling || matches!(outcome, Outcome::Cancelled(_)) {
        Action::Cancel
    } else if attempt < max_retries {
        Action::Retry {
            attempt: attempt + 1,
        }
    } else {
        Action::Fail
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    /// Waiting to run `attempt` (0 for a fresh task).
    Pending {
        attempt: u32,
    },
    Running {
        attempt: u32,
    },
    Succeeded {
        attempts: u32,
    },
    Failed {
        attempts: u32,
    },
    Cancelled,
}

impl TaskPhase {
    pub fn can_start(&self) -> bool {
        matches!(self, TaskPhase::Pending { .. })
    }
    pub fn can_finish(&self) -> bool {
        matches!(self, TaskPhase::Running { .. })
    }
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded { .. } | TaskPhase::Failed { .. } | TaskPhase::Cancelled
        )
    }
}

/// An event that does not fit the task's phase (a bug or a duplicate report).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("task {index}: cannot {op} while {}", match phase {
    Some(p) => format!("{p:?}"),
    None => "there is no such task".into(),
})]
pub struct IncorrectPhase {
    pub index: u32,
    pub op: &'static str,
    /// `None`: the index is out of range.
    pub phase: Option<TaskPhase>,
}

/// The task queue of one execution.
#[derive(Debug, Clone)]
pub struct Scheduler {
    parallelism: usize,
    max_retries: u32,
    tasks: Vec<TaskPhase>,
    /// Indexes of pending tasks, in the order they will start.
    queue: VecDeque<u32>,
    running: usize,
    cancelling: bool,
}

impl Scheduler {
    pub fn new(task_count: u32, parallelism: u32, max_retries: u32) -> Self {
        Scheduler {
            parallelism: parallelism.max(1) as usize,
            max_retries,
            tasks: vec![TaskPhase::Pending { attempt: 0 }; task_count as usize],
            queue: (0..task_count).collect(),
            running: 0,
            cancelling: false,
        }
    }

    /// The attempts to start now, as `(index, attempt)`; they count as running from here.
    pub fn start_ready(&mut self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        if self.cancelling {
            return out;
        }
        while self.running < self.parallelism {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            let Some(phase) = self.tasks.get_mut(index as usize) else {
                continue;
            };
            if let TaskPhase::Pending { attempt } = *phase {
                *phase = TaskPhase::Running { attempt };
                self.running += 1;
                out.push((index, attempt));
            }
        }
        out
    }

    /// Records the end of the running attempt of task `index`. A retry goes to the front of
    /// the queue: the task already holds a place in the execution's progress, and its
    /// result should not wait behind every task not yet started.
    pub fn finished(&mut self, index: u32, outcome: &Outcome) -> Result<Action, IncorrectPhase> {
        let phase = self.tasks.get_mut(index as usize).ok_or(IncorrectPhase {
            index,
            op: "finish",
            phase: None,
        })?;
        let TaskPhase::Running { attempt } = *phase else {
            return Err(IncorrectPhase {
                index,
                op: "finish",
                phase: Some(*phase),
            });
        };
        self.running -= 1;
        let action = next_action(attempt, self.max_retries, outcome, self.cancelling);
        *phase = match action {
            Action::Succeed => TaskPhase::Succeeded {
                attempts: attempt + 1,
            },
            Action::Fail => TaskPhase::Failed {
                attempts: attempt + 1,
            },
            Action::Cancel => TaskPhase::Cancelled,
            Action::Retry { attempt } => {
                self.queue.push_front(index);
                TaskPhase::Pending { attempt }
            }
        };
        Ok(action)
    }

    /// Cancels the execution: nothing starts any more; returns the pending tasks, now
    /// cancelled. Running attempts are stopped by the caller and reported through
    /// [`finished`](Self::finished) as usual.
    pub fn cancel(&mut self) -> Vec<u32> {
        self.cancelling = true;
        let mut out = Vec::new();
        for index in self.queue.drain(..) {
            if let Some(phase) = self.tasks.get_mut(index as usize) {
                if phase.can_start() {
                    *phase = TaskPhase::Cancelled;
                    out.push(index);
                }
            }
        }
        out
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    pub fn phase(&self, index: u32) -> Option<TaskPhase> {
        self.tasks.get(index as usize).copied()
    }

    /// True when every task has reached a final phase.
    pub fn is_done(&self) -> bool {
        self.running == 0 && self.tasks.iter().all(TaskPhase::is_final)
    }

    /// A scheduler taking over an execution where another left it (a daemon restarted):
    /// each task in `tasks`' phase; pending ones start in index order, running ones are
    /// reported through [`finished`](Self::finished) as usual.
    pub fn resume(parallelism: u32, max_retries: u32, tasks: Vec<TaskPhase>) -> Self {
        let queue = tasks
            .iter()
            .enumerate()
            .filter(|(_, p)| p.can_start())
            .map(|(i, _)| i as u32)
            .collect();
        let running = tasks.iter().filter(|p| p.can_finish()).count();
        Scheduler {
            parallelism: parallelism.max(1) as usize,
            max_retries,
            tasks,
            queue,
            running,
            cancelling: false,
        }
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    #[test]
    fn a_resumed_scheduler_continues_where_the_record_left() {
        let mut s = Scheduler::resume(
            2,
            3,
            vec![
                TaskPhase::Succeeded { attempts: 1 },
                TaskPhase::Running { attempt: 1 },
                TaskPhase::Pending { attempt: 0 },
                TaskPhase::Pending { attempt: 2 },
            ],
        );
        assert_eq!(s.running(), 1);
        assert_eq!(s.start_ready(), [(2, 0)]);
        let fail = Outcome::Exited(ExitStatus { code: 1 });
        assert_eq!(s.finished(1, &fail).unwrap(), Action::Retry { attempt: 2 });
        // A retry goes first, as in a scheduler that never stopped.
        assert_eq!(s.start_ready(), [(1, 2)]);
        let ok = Outcome::Exited(ExitStatus { code: 0 });
        s.finished(2, &ok).unwrap();
        assert_eq!(s.start_ready(), [(3, 2)]);
        assert!(!s.is_done());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: u32) -> Outcome {
        Outcome::Exited(ExitStatus { code })
    }

    #[test]
    fn next_action_table() {
        let oom = Outcome::OutOfMemory(ExitStatus { code: 137 });
        let timeout = Outcome::TimedOut(Some(ExitStatus { code: 137 }));
        let timeout_exit0 = Outcome::TimedOut(Some(ExitStatus { code: 0 }));
        let cancelled = Outcome::Cancelled(Some(ExitStatus { code: 143 }));
        let err = Outcome::RuntimeError("create: boom".into());
        let table = [
            // (attempt, max_retries, outcome, cancelling, want)
            (0, 3, exit(0), false, Action::Succeed),
            (3, 3, exit(0), false, Action::Succeed),
            (0, 3, exit(1), false, Action::Retry { attempt: 1 }),
            (2, 3, exit(1), false, Action::Retry { attempt: 3 }),
            (3, 3, exit(1), false, Action::Fail),
            (0, 0, exit(1), false, Action::Fail),
            (0, 1, oom.clone(), false, Action::Retry { attempt: 1 }),
            (1, 1, oom, false, Action::Fail),
            (0, 1, timeout.clone(), false, Action::Retry { attempt: 1 }),
            (1, 1, timeout, false, Action::Fail),
            // Past the timeout the attempt failed, even if SIGTERM made it exit 0 (LIFE-J2).
            (0, 0, timeout_exit0, false, Action::Fail),
            (0, 3, err, false, Action::Retry { attempt: 1 }),
            (0, 3, exit(1), true, Action::Cancel),
            (0, 3, exit(0), true, Action::Succeed),
            (0, 3, cancelled, false, Action::Cancel),
        ];
        for (attempt, max, outcome, cancelling, want) in table {
            assert_eq!(
                next_action(attempt, max, &outcome, cancelling),
                want,
                "{attempt} {max} {outcome:?} {cancelling}"
            );
        }
    }

    #[test]
    fn never_more_than_parallelism_at_once() {
        let mut s = Scheduler::new(5, 2, 0);
        assert_eq!(s.start_ready(), vec![(0, 0), (1, 0)]);
        assert_eq!(s.start_ready(), vec![], "full");
        assert_eq!(s.running(), 2);
        assert_eq!(s.finished(1, &exit(0)), Ok(Action::Succeed));
        assert_eq!(s.start_ready(), vec![(2, 0)]);
        assert_eq!(s.finished(0, &exit(0)), Ok(Action::Succeed));
        assert_eq!(s.finished(2, &exit(0)), Ok(Action::Succeed));
        assert_eq!(s.start_ready(), vec![(3, 0), (4, 0)]);
        assert!(!s.is_done());
        s.finished(3, &exit(0)).unwrap();
        s.finished(4, &exit(0)).unwrap();
        assert!(s.is_done());
        assert_eq!(s.phase(4), Some(TaskPhase::Succeeded { attempts: 1 }));
    }

    #[test]
    fn retries_run_next_as_a_new_attempt() {
        let mut s = Scheduler::new(3, 1, 2);
        assert_eq!(s.start_ready(), vec![(0, 0)]);
        assert_eq!(s.finished(0, &exit(1)), Ok(Action::Retry { attempt: 1 }));
        assert_eq!(s.phase(0), Some(TaskPhase::Pending { attempt: 1 }));
        assert_eq!(s.start_ready(), vec![(0, 1)], "the retry goes first");
        assert_eq!(s.finished(0, &exit(1)), Ok(Action::Retry { attempt: 2 }));
        assert_eq!(s.start_ready(), vec![(0, 2)]);
        assert_eq!(s.finished(0, &exit(1)), Ok(Action::Fail));
        assert_eq!(s.phase(0), Some(TaskPhase::Failed { attempts: 3 }));
        assert_eq!(
            s.start_ready(),
            vec![(1, 0)],
            "a failed task does not stop the others"
        );
    }

    #[test]
    fn cancel_stops_starting_and_cancels_pending_tasks() {
        let mut s = Scheduler::new(4, 2, 3);
        s.start_ready();
        assert_eq!(s.cancel(), vec![2, 3]);
        assert_eq!(s.start_ready(), vec![]);
        assert!(!s.is_done(), "two still running");
        assert_eq!(
            s.finished(0, &Outcome::Cancelled(Some(ExitStatus { code: 143 }))),
            Ok(Action::Cancel)
        );
        assert_eq!(
            s.finished(1, &exit(1)),
            Ok(Action::Cancel),
            "no retry while cancelling"
        );
        assert!(s.is_done());
        assert_eq!(s.phase(3), Some(TaskPhase::Cancelled));
    }

    #[test]
    fn a_report_for_a_task_not_running_is_refused() {
        let mut s = Scheduler::new(2, 1, 0);
        assert_eq!(
            s.finished(1, &exit(0)),
            Err(IncorrectPhase {
                index: 1,
                op: "finish",
                phase: Some(TaskPhase::Pending { attempt: 0 })
            })
        );
        let e = s.finished(7, &exit(0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task 7: cannot finish while there is no such task"
        );
        s.start_ready();
        s.finished(0, &exit(0)).unwrap();
        assert!(s.finished(0, &exit(0)).is_err(), "duplicate");
    }
}
