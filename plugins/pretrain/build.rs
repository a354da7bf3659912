//! Binaries and tests of this crate find libtorch without LD_LIBRARY_PATH: its folder goes into
//! their rpath. torch-sys reports the folder (`links = "tch"` → DEP_TCH_LIBTORCH_LIB).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // Keep libtorch_cuda in the binary's needed libraries (--as-needed would drop it, and CUDA
    // would never register) when the torch build has it.
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}
