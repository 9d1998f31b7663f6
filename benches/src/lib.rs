//! Benchmark helpers shared by the criterion suites.
