//! Compiles Kubernetes' `.proto` files (`proto/`, Kubernetes 1.33) into a descriptor
//! set the protobuf reader loads at run time. protox is a compiler in Rust, so no
//! `protoc` is needed.

fn main() {
    let files = [
        "api/core/v1/generated.proto",
        "api/apps/v1/generated.proto",
        "api/autoscaling/v2/generated.proto",
        "api/coordination/v1/generated.proto",
        "api/discovery/v1/generated.proto",
        "api/batch/v1/generated.proto",
        "api/rbac/v1/generated.proto",
        "api/apiregistration/v1/generated.proto",
        "apimachinery/pkg/apis/meta/v1/generated.proto",
        "apimachinery/pkg/runtime/generated.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let set = protox::Compiler::new(["proto"])
        .and_then(|mut c| {
            c.include_imports(true).include_source_info(false);
            c.open_files(files)?;
            Ok(c.encode_file_descriptor_set())
        })
        .unwrap_or_else(|e| panic!("cannot compile the Kubernetes .proto files: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("kubernetes.bin"), set).expect("cannot write the descriptor set");
}
