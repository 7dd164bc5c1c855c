//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): whatever the
//! bytes, reading them ends in an object or an error, and an object read is
//! written back to bytes that read as the same object.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tugboat_api::protobuf;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = protobuf::decode(data) else {
        return;
    };
    if let Ok(bytes) = protobuf::encode(&object) {
        let again = protobuf::decode(&bytes).expect("what was written reads back");
        assert_eq!(
            again, object,
            "the object changed on the way through protobuf"
        );
    }
});
