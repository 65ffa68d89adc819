//! The integration tests, one binary: each module drives agentlab through its
//! public API on temporary directories.

mod legacy_import;
