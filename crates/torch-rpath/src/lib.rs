//! Called from the `build.rs` of every crate whose binaries or tests link libtorch, so they find
//! it without LD_LIBRARY_PATH. torch-sys reports libtorch's folder (`links = "tch"` →
//! `DEP_TCH_LIBTORCH_LIB`) only to its direct dependents: such a crate lists `torch-sys` as a
//! dependency for that reason alone.

/// Emits the linker arguments: the rpath, and `libtorch_cuda` kept as needed when the torch
/// build has it (`--as-needed` would drop it, and CUDA would never register).
pub fn emit() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}
