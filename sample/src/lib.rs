//! tug-sample, Tugboat's test workload: a small HTTP server in the spirit of
//! Kubernetes' agnhost whose health, readiness and lifetime tests can steer. Its image
//! is `FROM scratch` with the binary (see `tugboat_agent::image`).
//!
//! `args` parses the command line (clap), `routes` answers requests from the server's
//! `State` (a pure function, unit-tested without sockets), `server` binds, accepts and
//! serves connections (tokio and hyper) and handles signals and `--exit-after`;
//! `pause` is the pod sandbox's process (holds the pod's network namespace).

pub mod args;
pub mod burn;
pub mod net;
pub mod pause;
pub mod routes;
pub mod server;
