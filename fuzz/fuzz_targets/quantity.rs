//! Resource quantities: never a panic or an overflow, values capped at 2^63-1,
//! and millicores consistent with whole units.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tugboat_api::quantity::{self, Quantity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (Some(millis), Some(units)) = (quantity::cpu_millis(text), quantity::bytes(text)) else {
        assert!(Quantity::parse(text).is_none());
        return;
    };
    let q = Quantity::parse(text).expect("parsed above");
    assert!(q.as_f64().is_finite());
    if !q.is_negative() {
        assert!(millis >= 0 && units >= 0, "{text:?}: {millis} {units}");
        // Both are rounded up: the millicores are never more than 1000 less
        // than 1000 times the (rounded up) units, unless capped.
        if units < i64::MAX / 1000 {
            assert!(millis <= units * 1000, "{text:?}: {millis}m > {units}");
            assert!(
                millis > (units - 1) * 1000 - 1,
                "{text:?}: {millis}m ≪ {units}"
            );
        }
    }
});
