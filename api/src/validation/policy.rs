//! ResourceQuotas and LimitRanges: resource names and quantities, and the
//! order a LimitRange's bounds must keep (min ≤ default request ≤ default ≤
//! max).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Errors;
use super::meta::{NameRule, object_meta};
use crate::quantity;
use crate::status::FieldError;

fn quantities(errs: &mut Errors, path: &str, map: Option<&BTreeMap<String, Quantity>>) {
    for (name, q) in map.into_iter().flatten() {
        let field = format!("{path}[{name}]");
        match quantity::Quantity::parse(&q.0) {
            None => errs.push(FieldError::invalid(
                field,
                format!("\"{}\"", q.0),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
            Some(v) if v.is_negative() => errs.push(FieldError::invalid(
                field,
                format!("\"{}\"", q.0),
                "must be greater than or equal to 0",
            )),
            Some(_) => {}
        }
    }
}

pub fn resource_quota(q: &ResourceQuota) -> Errors {
    let mut errs = object_meta(&q.metadata, true, NameRule::Subdomain);
    if let Some(spec) = &q.spec {
        quantities(&mut errs, "spec.hard", spec.hard.as_ref());
        for (i, s) in spec.scopes.iter().flatten().enumerate() {
            const SCOPES: &[&str] = &[
                "Terminating",
                "NotTerminating",
                "BestEffort",
                "NotBestEffort",
                "PriorityClass",
                "CrossNamespacePodAffinity",
            ];
            if !SCOPES.contains(&s.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("spec.scopes[{i}]"),
                    s,
                    SCOPES,
                ));
            }
        }
    }
    errs
}

pub fn limit_range(l: &LimitRange) -> Errors {
    let mut errs = object_meta(&l.metadata, true, NameRule::Subdomain);
    let Some(spec) = &l.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    for (i, item) in spec.limits.iter().enumerate() {
        let path = format!("spec.limits[{i}]");
        const TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];
        if !TYPES.contains(&item.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                &item.type_,
                TYPES,
            ));
        }
        for (field, map) in [
            ("max", &item.max),
            ("min", &item.min),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ] {
            quantities(&mut errs, &format!("{path}.{field}"), map.as_ref());
        }
        if item.type_ == "Pod" && (item.default.is_some() || item.default_request.is_some()) {
            errs.push(FieldError::forbidden(
                format!("{path}.default"),
                "may not be specified when `type` is 'Pod'",
            ));
        }
        let get = |m: &Option<BTreeMap<String, Quantity>>, r: &str| {
            m.as_ref()
                .and_then(|m| m.get(r))
                .and_then(|q| quantity::Quantity::parse(&q.0))
                .map(|q| q.as_f64())
        };
        let resources: std::collections::BTreeSet<&String> =
            [&item.max, &item.min, &item.default, &item.default_request]
                .into_iter()
                .flatten()
                .flat_map(|m| m.keys())
                .collect();
        for r in resources {
            let (min, max) = (get(&item.min, r), get(&item.max, r));
            let (def, req) = (get(&item.default, r), get(&item.default_request, r));
            let order = [
                (min, req, "min", "defaultRequest"),
                (req, def, "defaultRequest", "default"),
                (def, max, "default", "max"),
                (min, max, "min", "max"),
                (req, max, "defaultRequest", "max"),
                (min, def, "min", "default"),
            ];
            for (lo, hi, lo_name, hi_name) in order {
                if let (Some(lo), Some(hi)) = (lo, hi)
                    && lo > hi
                {
                    errs.push(FieldError::invalid(
                        format!("{path}.{lo_name}[{r}]"),
                        lo,
                        &format!("{lo_name} value must be less than or equal to {hi_name} value"),
                    ));
                }
            }
        }
    }
    errs
}
