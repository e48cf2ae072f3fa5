//! Test-host harness (filled in later).
