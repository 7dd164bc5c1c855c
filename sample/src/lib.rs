//! tug-sample, Tugboat's test workload: a small HTTP server in the spirit of
//! Kubernetes' agnhost whose health, readiness and lifetime tests can steer. It depends
//! on std alone, so its image is the binary and its libc on `scratch`.
//!
//! `args` parses the command line, `http` reads requests and writes responses, `server`
//! holds the routes and the accept loop, `json` escapes the little JSON it writes.

pub mod args;
pub mod http;
pub mod json;
pub mod server;
