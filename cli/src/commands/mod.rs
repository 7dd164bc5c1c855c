//! One module per verb, each with `run(args, ctx)`; `lib.rs` dispatches to them.

pub mod agent;
pub mod apply;
pub mod autoscale;
pub mod controller;
pub mod cordon;
pub mod cp;
pub mod create;
pub mod create_batch;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod down;
pub mod drain;
pub mod exec;
pub mod get;
pub mod kubeconfig;
pub mod logs;
pub mod port_forward;
pub mod rollout;
pub mod scale;
pub mod set;
pub mod token;
pub mod top;
pub mod up;
pub mod version;
pub mod wait;
