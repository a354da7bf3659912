//! Compiles the small C++ shim that calls libtorch ops tch does not bind (the fused AdamW kernel,
//! resetting gradients to none), against the libtorch torch-sys found, and puts libtorch's folder
//! into the rpath of this crate's binaries, tests and examples.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB)");
    let lib = std::path::PathBuf::from(lib);
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/optim.cpp")
        .compile("leo_train_optim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    leo_torch_rpath::emit();
}
