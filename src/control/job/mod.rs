//! Jobs: executions, tasks, attempts (to be written).
