//! Binaries and tests of this crate find libtorch through their rpath (see leo-torch-rpath).
fn main() {
    leo_torch_rpath::emit();
}
