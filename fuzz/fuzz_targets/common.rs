//! What every target checks of an object the API accepted: it is within the
//! bounds, and it reads back, as the store will read it on its next open.

use serde_json::Value;
use tugboat_api::limits;

/// Panics (a crash for libFuzzer) if `object` could not be stored and read back.
pub fn assert_storable(object: &Value) {
    if let Err(e) = limits::check_object(object) {
        panic!("an accepted object is outside the bounds: {e}");
    }
    let bytes = serde_json::to_vec(object).expect("an accepted object encodes");
    let back: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("an accepted object does not decode: {e}"));
    assert_eq!(
        &back, object,
        "an accepted object changed on its way through JSON"
    );
    // The history wraps it one level deeper, and lists and watch events one more.
    let wrapped = serde_json::json!({"type": "ADDED", "object": {"items": [object]}});
    let bytes = serde_json::to_vec(&wrapped).expect("a wrapped object encodes");
    serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|e| panic!("an accepted object does not decode inside a list: {e}"));
}
