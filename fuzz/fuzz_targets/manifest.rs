//! Manifests and request bodies: YAML (multi-document) and strict JSON, then
//! admission (decode into the Kubernetes type, default, validate) as every kind.
//! Whatever is admitted and within the bounds must be storable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tugboat_api::admission::{self, FieldValidation};
use tugboat_api::{json, limits, manifest, resource};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut docs = Vec::new();
    if let Ok(parsed) = json::parse(data) {
        assert!(
            limits::depth(&parsed.value, limits::MAX_DEPTH) <= limits::MAX_DEPTH,
            "the JSON reader let a value deeper than the limit through"
        );
        docs.push(parsed.value);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(more) = manifest::parse_documents(text)
    {
        docs.extend(more);
    }
    for doc in docs {
        for info in resource::ALL {
            if admission::check_type(info, &doc).is_err() {
                continue;
            }
            for mode in [FieldValidation::Strict, FieldValidation::Ignore] {
                if let Ok(admitted) = admission::admit(info, doc.clone(), None, mode)
                    && limits::check_object(&admitted.object).is_ok()
                {
                    common::assert_storable(&admitted.object);
                    // Admitting what was admitted is stable.
                    let again = admission::admit(info, admitted.object.clone(), None, mode)
                        .expect("an admitted object is admitted again");
                    assert_eq!(again.object, admitted.object, "admission is not idempotent");
                }
            }
        }
    }
});
