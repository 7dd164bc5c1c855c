//! The text of `tug describe`, laid out as kubectl's describers lay it out: labelled
//! fields aligned in blocks, nested sections indented by two spaces, tables of
//! conditions and containers, and an `Events:` table at the end. Pure functions over
//! the object and what was fetched alongside it (replica sets, pods, events); this
//! module holds the parts every describer shares, one submodule per kind of object.

mod batch;
mod config;
mod node;
mod pod;
mod service;
mod template;
mod workloads;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::columns::event_time;
use crate::duration::{rfc1123, since_micro, since_time};
use crate::merge::LAST_APPLIED;
use crate::table::TabWriter;

pub use batch::{cron_job, job};
pub use config::{config_map, limit_range, resource_quota, secret, service_account};
pub use node::{format_cpu, format_memory, node, parse_quantity};
pub use pod::pod;
pub use service::{endpoint_slice, endpoints, service, slice_endpoints};
pub use workloads::{
    daemon_set, deployment, replica_set, replication_controller, split_replica_sets,
};

/// Annotations longer than this are printed on their own lines, cut to fit.
const MAX_ANNOTATION_LEN: usize = 140;

/// kubectl's `PrefixWriter`: lines at an indentation level, aligned at the end.
#[derive(Default)]
struct Writer {
    text: String,
}

impl Writer {
    fn line(&mut self, level: usize, s: &str) {
        self.raw(level, s);
        self.text.push('\n');
    }

    fn raw(&mut self, level: usize, s: &str) {
        self.text.extend(std::iter::repeat_n(' ', level * 2));
        self.text.push_str(s);
    }

    fn finish(self) -> String {
        TabWriter::DESCRIBE.format(&self.text)
    }
}

/// Tabs and newlines would break the alignment.
fn cell(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

fn time(t: Option<&Time>) -> String {
    t.map_or_else(|| "<unset>".to_string(), |t| rfc1123(t.0))
}

fn labels(w: &mut Writer, title: &str, labels: Option<&BTreeMap<String, String>>) {
    w.raw(0, &format!("{title}:\t"));
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        w.text.push_str("<none>\n");
        return;
    };
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            w.raw(0, "\t");
        }
        w.text.push_str(&format!("{}={}\n", cell(k), cell(v)));
    }
}

fn annotations(w: &mut Writer, title: &str, annotations: Option<&BTreeMap<String, String>>) {
    w.raw(0, &format!("{title}:\t"));
    let shown: Vec<(&String, &String)> = annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
        .collect();
    if shown.is_empty() {
        w.text.push_str("<none>\n");
        return;
    }
    for (i, (k, v)) in shown.into_iter().enumerate() {
        if i > 0 {
            w.raw(0, "\t");
        }
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            w.text.push_str(&format!("{}:\n", cell(k)));
            for part in v.split('\n') {
                w.line(
                    0,
                    &format!("\t  {}", shorten(&cell(part), MAX_ANNOTATION_LEN - 2)),
                );
            }
        } else {
            w.text.push_str(&format!("{}: {}\n", cell(k), cell(v)));
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `Kind/name` of the controlling owner.
fn controlled_by(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
}

/// The `Events:` section, oldest first, repeated events as `3m (x4 over 10m)`.
fn events(w: &mut Writer, events: &[Event], now: Timestamp) {
    if events.is_empty() {
        w.line(0, "Events:\t<none>");
        return;
    }
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| event_time(e));
    w.line(0, "Events:");
    w.line(1, "Type\tReason\tAge\tFrom\tMessage");
    w.line(1, "----\t------\t----\t----\t-------");
    for e in sorted {
        let count = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1);
        let first = match &e.first_timestamp {
            Some(t) => since_time(Some(t), now),
            None => since_micro(e.event_time.as_ref(), now),
        };
        let interval = if count > 1 {
            let last = match (&e.series, &e.last_timestamp) {
                (Some(s), _) => since_micro(s.last_observed_time.as_ref(), now),
                (None, Some(t)) => since_time(Some(t), now),
                (None, None) => first.clone(),
            };
            format!("{last} (x{count} over {first})")
        } else {
            first
        };
        let source = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        w.line(
            1,
            &format!(
                "{}\t{}\t{}\t{}\t{}",
                cell(e.type_.as_deref().unwrap_or("")),
                cell(e.reason.as_deref().unwrap_or("")),
                interval,
                cell(&source),
                cell(e.message.as_deref().unwrap_or("").trim()),
            ),
        );
    }
}

pub fn namespace(ns: &Namespace) -> String {
    let mut w = Writer::default();
    let m = &ns.metadata;
    w.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or("")));
    labels(&mut w, "Labels", m.labels.as_ref());
    annotations(&mut w, "Annotations", m.annotations.as_ref());
    w.line(
        0,
        &format!(
            "Status:\t{}",
            ns.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("")
        ),
    );
    w.line(0, "");
    w.line(0, "No resource quota.");
    w.line(0, "");
    w.line(0, "No LimitRange resource.");
    w.finish()
}

/// A pod template alone, as `kubectl rollout history --revision N` shows one.
pub fn pod_template(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    let mut w = Writer::default();
    template::pod_template(&mut w, Some(t));
    w.finish()
}

/// Any other object: its metadata and events.
pub fn generic(meta: &ObjectMeta, evs: &[Event], now: Timestamp) -> String {
    let mut w = Writer::default();
    w.line(0, &format!("Name:\t{}", meta.name.as_deref().unwrap_or("")));
    if let Some(ns) = meta.namespace.as_deref() {
        w.line(0, &format!("Namespace:\t{ns}"));
    }
    labels(&mut w, "Labels", meta.labels.as_ref());
    annotations(&mut w, "Annotations", meta.annotations.as_ref());
    w.line(
        0,
        &format!(
            "CreationTimestamp:\t{}",
            time(meta.creation_timestamp.as_ref())
        ),
    );
    events(&mut w, evs, now);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    pub(crate) fn event(reason: &str, count: i32) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "type": "Normal", "reason": reason, "message": "Scaled up replica set web-new to 3",
            "source": {"component": "deployment-controller"},
            "firstTimestamp": "2026-01-01T11:50:00Z", "lastTimestamp": "2026-01-01T11:59:00Z", "count": count
        }))
        .unwrap()
    }

    #[test]
    fn repeated_events_show_how_often_and_since_when() {
        let text = generic(&ObjectMeta::default(), &[event("BackOff", 4)], now());
        assert!(text.contains("60s (x4 over 10m)"), "{text}");
    }

    #[test]
    fn no_events_is_said_on_the_events_line() {
        let text = namespace(
            &serde_json::from_value(
                json!({"metadata": {"name": "team"}, "status": {"phase": "Active"}}),
            )
            .unwrap(),
        );
        assert!(text.starts_with("Name:         team\nLabels:       <none>\nAnnotations:  <none>\nStatus:       Active\n"), "{text}");
        let text = generic(&ObjectMeta::default(), &[], now());
        assert!(text.contains("Events:"), "{text}");
        assert!(text.trim_end().ends_with("<none>"), "{text}");
    }
}
