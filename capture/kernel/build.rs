fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        let script = format!("{dir}/../../linker/{arch}.ld");
        println!("cargo:rerun-if-changed={script}");
        println!("cargo:rustc-link-arg-bins=-T{script}");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        if arch == "aarch64" {
            // A static PIE (the target's default is a fixed-address executable).
            println!("cargo:rustc-link-arg-bins=-pie");
            println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
            println!("cargo:rustc-link-arg-bins=-ztext");
        }
    }
}
