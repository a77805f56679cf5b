//! Links the release binary with its debug sections compressed (zlib, which the standard
//! library's backtraces can read): the line tables stay in the binary, so `RUST_BACKTRACE=1`
//! names files and lines wherever the binary is copied, at a fraction of their size. The rest
//! of the debug info is in `shoal.dwp` beside it (see `[profile.release]` in the workspace's
//! Cargo.toml). Other profiles link as they always did.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux {
        println!("cargo::rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
    }
}
