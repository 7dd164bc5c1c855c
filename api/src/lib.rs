//! Tugboat's object model, shared by the controller, the agent and the CLI.
//!
//! Objects are Kubernetes' own types from `k8s-openapi`; this crate adds what
//! Tugboat needs around them: the resource table ([`resource`]), manifest parsing
//! ([`manifest`]), defaulting ([`defaults`]) and validation ([`validation`]) as the
//! Kubernetes API server does them, label and field selectors ([`selector`]),
//! `Status` errors ([`status`]) and an HTTP client ([`client`]).

pub mod admission;
pub mod client;
pub mod columns;
pub mod cron;
pub mod defaults;
pub mod duration;
pub mod json;
pub mod limit_range;
pub mod limits;
pub mod manifest;
pub mod meta;
pub mod metrics;
pub mod pod_security;
pub mod protobuf;
pub mod quantity;
pub mod query;
pub mod quota;
pub mod resource;
pub mod selector;
pub mod status;
pub mod unsupported;
pub mod validation;

pub use client::{
    Client, ClientError, Credentials, LenientList, ListParams, PatchType, WatchEvent,
};
pub use k8s_openapi;
pub use resource::ResourceInfo;
pub use status::{ApiError, FieldError};
