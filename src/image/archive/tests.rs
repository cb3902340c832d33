//! Table-driven tests over broken archives.
