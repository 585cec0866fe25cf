//! Benchmarks (`molt bench`).
