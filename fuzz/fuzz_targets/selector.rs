//! Label and field selectors as they come in a query string.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::validation;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let object = json!({"metadata": {"name": "a", "namespace": "b", "labels": {"app": "web", "x.io/t": "1"}},
        "spec": {"nodeName": "n"}, "status": {"phase": "Running"}, "source": {"component": "c"}});
    if let Ok(s) = Selector::parse(text) {
        let _ = s.matches_object(&object);
        // Whatever a selector accepted as a key is a key a label can have.
        for part in text.split(',') {
            if let Some((k, _)) = part.split_once('=') {
                let k = k.trim().trim_end_matches('!').trim();
                if !k.is_empty() && !k.contains(['(', ' ']) {
                    assert!(
                        validation::qualified_name(k).is_none(),
                        "selector {text:?} accepted the key {k:?}"
                    );
                }
            }
        }
    }
    if let Ok(f) = FieldSelector::parse(text) {
        let _ = f.matches(&object);
        for kind in ["Pod", "Event", "Node", "Namespace", "Deployment"] {
            let _ = f.check_supported(kind);
        }
    }
});
