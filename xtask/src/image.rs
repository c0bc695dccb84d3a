//! Building the capture kernel images from the linked ELF.
//!
//! - `capture.elf`: the linked static-PIE ELF itself; its PVH note makes
//!   `qemu-system-x86_64 -kernel capture.elf` boot it.
//! - `bzImage`: the same bytes as a Linux x86 boot-protocol image for kexec: sector 0 carries
//!   the setup header (boot.rst), sectors 1..=SETUP_SECTS are reserved (room for a PE/COFF
//!   header and section table for Secure Boot signing later), then the flat payload: the file
//!   bytes of the ELF's one PT_LOAD, whose offset 0x200 is the 64-bit entry.

use crate::{cargo, run, workspace_root};
use lifeboat_arch::x86_64::bootparam::{self, SetupHeader};
use lifeboat_arch::x86_64::LINK_BASE;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;
use std::path::PathBuf;

/// 512-byte setup sectors after sector 0 (reserved; loaders skip them).
const SETUP_SECTS: u8 = 4;
/// The runtime memory goal from the design: image, bss, heap, stack and page tables.
const RUNTIME_GOAL: u64 = 8 << 20;

pub struct Images {
    pub capture_elf: PathBuf,
    pub bzimage: PathBuf,
    /// The `lifeboat` tool, static (musl), for initramfs images and the e2e guests.
    pub lifeboat_static: PathBuf,
}

pub fn build_x86_64() -> Result<Images, String> {
    let root = workspace_root();
    let data = build_kernel("x86_64-unknown-none")?;
    let layout = inspect(&data)?;

    let out = root.join("target/lifeboat/x86_64");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let capture_elf = out.join("capture.elf");
    std::fs::write(&capture_elf, &data).map_err(|e| format!("{}: {e}", capture_elf.display()))?;

    let payload = &data[layout.file_offset..layout.file_offset + layout.file_size];
    let init_size = layout.mem_size.div_ceil(4096) * 4096;
    let hdr = SetupHeader::lifeboat(SETUP_SECTS, payload.len() as u32, init_size as u32);
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut bz = vec![0u8; setup_len];
    bz[bootparam::SETUP_HEADER_OFFSET..bootparam::SETUP_HEADER_OFFSET + 123].copy_from_slice(&hdr.to_bytes());
    // Real-mode code after the header (reached only if something runs the 16-bit setup,
    // e.g. QEMU -kernel bzImage, which lifeboat does not support): cli; hlt; jmp .-1.
    bz[0x26C..0x270].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    bz.extend_from_slice(payload);
    let bzimage = out.join("bzImage");
    std::fs::write(&bzimage, &bz).map_err(|e| format!("{}: {e}", bzimage.display()))?;

    println!("lifeboat x86_64 images (target/lifeboat/x86_64):");
    println!("  bzImage      {:>9} bytes  (kexec: kexec_file_load or kexec -p)", bz.len());
    println!("  capture.elf  {:>9} bytes  (PVH: qemu-system-x86_64 -kernel)", data.len());
    println!(
        "  runtime memory (init_size: image + bss + heap + stack + page tables) {} KiB = {:.2} MiB (goal <= 8 MiB)",
        init_size / 1024,
        init_size as f64 / (1 << 20) as f64
    );
    println!("  relocations: {} R_X86_64_RELATIVE", layout.relocs);
    if init_size > RUNTIME_GOAL {
        return Err(format!("runtime memory {init_size} bytes exceeds the 8 MiB goal"));
    }
    let lifeboat_static = build_static_loader("x86_64-unknown-linux-musl", &out)?;
    println!("  lifeboat     {:>9} bytes  (static host tool: load/status/receive)", file_len(&lifeboat_static));
    Ok(Images { capture_elf, bzimage, lifeboat_static })
}

struct Layout {
    file_offset: usize,
    file_size: usize,
    mem_size: u64,
    relocs: usize,
}

/// Check the linked kernel is what the boot paths need: one PT_LOAD at LINK_BASE, a PVH
/// note, the LIFEBOAT header at payload offset 0, only RELATIVE relocations (the entry code
/// applies nothing else).
fn inspect(data: &[u8]) -> Result<Layout, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| format!("kernel ELF: {e}"))?;
    let endian = file.endian();
    let hdr = file.elf_header();
    let p = single_load(data, LINK_BASE)?;
    let file_offset = p.p_offset(endian) as usize;
    let file_size = p.p_filesz(endian) as usize;
    let payload = data.get(file_offset..file_offset + file_size).ok_or("kernel PT_LOAD beyond file")?;
    if !payload.starts_with(b"LIFEBOAT") {
        return Err("payload does not start with the LIFEBOAT image header".into());
    }
    let relocs = count_relative_relocs(data, elf::R_X86_64_RELATIVE)?;
    let has_pvh = hdr
        .section_headers(endian, data)
        .map_err(|e| format!("kernel ELF: {e}"))?
        .iter()
        .any(|s| s.sh_type(endian) == elf::SHT_NOTE);
    if !has_pvh {
        return Err("kernel ELF has no PVH note".into());
    }
    // The 64-bit entry must sit at payload offset 0x200.
    let entry = &payload[bootparam::ENTRY64_OFFSET as usize..bootparam::ENTRY64_OFFSET as usize + 1];
    if entry != [0xFA] {
        return Err("payload offset 0x200 is not the 64-bit entry (expected cli)".into());
    }
    Ok(Layout { file_offset, file_size, mem_size: p.p_memsz(endian), relocs })
}

/// The kernel ELF's one PT_LOAD, which must be at `link_base`.
fn single_load(data: &[u8], link_base: u64) -> Result<&elf::ProgramHeader64<Endianness>, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| format!("kernel ELF: {e}"))?;
    let endian = file.endian();
    let loads: Vec<_> = file
        .elf_header()
        .program_headers(endian, data)
        .map_err(|e| format!("kernel ELF: {e}"))?
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .collect();
    if loads.len() != 1 {
        return Err(format!("kernel ELF has {} PT_LOAD segments, the layout needs exactly 1", loads.len()));
    }
    let p = loads[0];
    if p.p_vaddr(endian) != link_base || p.p_paddr(endian) != link_base {
        return Err(format!("kernel PT_LOAD is at {:#x}, expected {:#x}", p.p_vaddr(endian), link_base));
    }
    Ok(p)
}

/// Count the kernel's RELA relocations, all of which must be of type `relative` (the entry
/// code applies nothing else).
fn count_relative_relocs(data: &[u8], relative: u32) -> Result<usize, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| format!("kernel ELF: {e}"))?;
    let endian = file.endian();
    let mut relocs = 0;
    for s in file.elf_header().section_headers(endian, data).map_err(|e| format!("kernel ELF: {e}"))?.iter() {
        if s.sh_type(endian) == elf::SHT_REL {
            return Err("kernel has REL relocations; only RELA RELATIVE are applied".into());
        }
        if s.sh_type(endian) == elf::SHT_RELA {
            let bytes = s.data(endian, data).map_err(|e| format!("kernel ELF: {e}"))?;
            for r in bytes.chunks_exact(24) {
                let info = u64::from_le_bytes(r[8..16].try_into().unwrap());
                if info & 0xffff_ffff != u64::from(relative) {
                    return Err(format!("kernel has relocation type {} (only RELATIVE is applied)", info & 0xffff_ffff));
                }
                relocs += 1;
            }
        }
    }
    Ok(relocs)
}

pub struct Aarch64Images {
    /// The arm64 Image (kexec, QEMU `-M virt -kernel`).
    pub image: PathBuf,
    /// The `lifeboat` tool for arm64, static (musl, linked with rust-lld).
    pub lifeboat_static: PathBuf,
}

/// Build `target/lifeboat/aarch64/Image`: the file bytes of the linked ELF's one PT_LOAD,
/// which start with the arm64 Image header (arch/src/aarch64/entry.rs).
pub fn build_aarch64() -> Result<Aarch64Images, String> {
    use lifeboat_arch::aarch64::image::{ImageHeader, LIFEBOAT_HEADER_OFFSET};
    let root = workspace_root();
    let data = build_kernel("aarch64-unknown-none")?;
    let file = ElfFile64::<Endianness>::parse(&*data).map_err(|e| format!("kernel ELF: {e}"))?;
    if file.elf_header().e_machine(file.endian()) != elf::EM_AARCH64 {
        return Err("the arm64 kernel ELF is not EM_AARCH64".into());
    }
    let p = single_load(&data, lifeboat_arch::aarch64::LINK_BASE)?;
    let endian = file.endian();
    let (off, filesz, memsz) = (p.p_offset(endian) as usize, p.p_filesz(endian) as usize, p.p_memsz(endian));
    let payload = data.get(off..off + filesz).ok_or("kernel PT_LOAD beyond file")?;
    let hdr = ImageHeader::parse(payload).map_err(|e| format!("arm64 Image header: {e}"))?;
    hdr.check(filesz as u64).map_err(|e| format!("arm64 Image header: {e}"))?;
    if hdr.image_size != memsz {
        return Err(format!("image_size {:#x} is not the segment's memory size {:#x}", hdr.image_size, memsz));
    }
    if !payload[LIFEBOAT_HEADER_OFFSET..].starts_with(b"LIFEBOAT") {
        return Err("no LIFEBOAT header at offset 0x40 of the arm64 Image".into());
    }
    let relocs = count_relative_relocs(&data, elf::R_AARCH64_RELATIVE)?;
    let out = root.join("target/lifeboat/aarch64");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let image = out.join("Image");
    std::fs::write(&image, payload).map_err(|e| format!("{}: {e}", image.display()))?;
    println!("lifeboat aarch64 image (target/lifeboat/aarch64):");
    println!("  Image        {:>9} bytes  (kexec, qemu-system-aarch64 -M virt -kernel)", payload.len());
    println!(
        "  runtime memory (image_size: image + bss + heap + stack + page tables) {} KiB = {:.2} MiB (goal <= 8 MiB)",
        memsz / 1024,
        memsz as f64 / (1 << 20) as f64
    );
    println!("  relocations: {relocs} R_AARCH64_RELATIVE");
    if memsz > RUNTIME_GOAL {
        return Err(format!("runtime memory {memsz} bytes exceeds the 8 MiB goal"));
    }
    let lifeboat_static = build_static_loader("aarch64-unknown-linux-musl", &out)?;
    println!("  lifeboat     {:>9} bytes  (static arm64 host tool: load/status/receive)", file_len(&lifeboat_static));
    Ok(Aarch64Images { image, lifeboat_static })
}

/// Build the capture kernel for the bare-metal `target`; returns the linked ELF's bytes.
fn build_kernel(target: &str) -> Result<Vec<u8>, String> {
    crate::setup::ensure_targets_quiet();
    run(cargo().args(["build", "--quiet", "-p", "lifeboat-kernel", "--target", target, "--profile", "kernel"]))?;
    let elf_path = workspace_root().join(format!("target/{target}/kernel/lifeboat-kernel"));
    std::fs::read(&elf_path).map_err(|e| format!("{}: {e}", elf_path.display()))
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Build `lifeboat` as a static binary and copy it next to the images.
fn build_static_loader(target: &str, out: &std::path::Path) -> Result<PathBuf, String> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--release", "-p", "lifeboat-loader", "--bin", "lifeboat", "--target", target]);
    run(&mut cmd)?;
    let built = workspace_root().join(format!("target/{target}/release/lifeboat"));
    let dest = out.join("lifeboat");
    std::fs::copy(&built, &dest).map_err(|e| format!("{} -> {}: {e}", built.display(), dest.display()))?;
    Ok(dest)
}
