//! Parsers for the small kernel files a crash loader reads. Each takes the file's text (or
//! bytes) so it is tested without a kernel; [`crate::host`] does the reading.
//!
//! Formats (Linux, and how kexec-tools `kexec/crashdump.c` reads them):
//! - `/sys/devices/system/cpu/cpuN/crash_notes`: `"%llx\n"`, physical address of the CPU's
//!   `note_buf_t`; `crash_notes_size`: `"%zu\n"` (`drivers/base/cpu.c`).
//! - `/sys/kernel/vmcoreinfo`: `"%lx %x\n"`, physical address and size of the VMCOREINFO note
//!   (`kernel/ksysfs.c`).
//! - `/sys/kernel/kexec_crash_size`: `"%zu\n"`; `/sys/kernel/kexec_crash_loaded`: `"0\n"`/`"1\n"`.
//! - `/sys/kernel/security/lockdown`: `"none [integrity] confidentiality\n"`, the active mode
//!   in brackets (`security/lockdown/lockdown.c`).
//! - `/sys/kernel/boot_params/data`: the running kernel's `struct boot_params` (4096 bytes);
//!   `acpi_rsdp_addr` is the u64 at 0x070.
//! - `/sys/firmware/efi/systab`: `"ACPI20=0x…"` / `"ACPI=0x…"` lines.
//! - `/proc/kcore`: an ELF64 core whose `PT_LOAD`s map the direct map; for RAM, `p_paddr` is
//!   the physical address (`fs/proc/kcore.c`), so `p_vaddr - p_paddr` is `PAGE_OFFSET`
//!   (x86_64) or `PAGE_OFFSET - PHYS_OFFSET` (arm64, the linear map).
//! - `/proc/kallsyms`: `"%px %c %s\n"` (plus `\t[module]` for modules); addresses read as 0
//!   when `kptr_restrict` hides them (`kernel/kallsyms.c`).

use crate::memmap::Range;

/// `0x`-prefixed or bare hexadecimal, surrounding whitespace allowed.
pub fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

/// A decimal number, surrounding whitespace allowed.
pub fn parse_dec(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// `/sys/kernel/vmcoreinfo`: physical address and size.
pub fn parse_vmcoreinfo(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    let addr = parse_hex(it.next()?)?;
    let size = parse_hex(it.next()?)?;
    (addr != 0 && size != 0).then_some((addr, size))
}

/// The kernel lockdown mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
}

impl Lockdown {
    /// Parses `/sys/kernel/security/lockdown`; `None` if no mode is bracketed.
    pub fn parse(s: &str) -> Option<Self> {
        let start = s.find('[')?;
        let end = start + s[start..].find(']')?;
        match &s[start + 1..end] {
            "none" => Some(Lockdown::None),
            "integrity" => Some(Lockdown::Integrity),
            "confidentiality" => Some(Lockdown::Confidentiality),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        }
    }
}

/// `acpi_rsdp_addr` from `/sys/kernel/boot_params/data`.
pub fn rsdp_from_boot_params(data: &[u8]) -> Option<u64> {
    let b: [u8; 8] = data.get(0x70..0x78)?.try_into().ok()?;
    let v = u64::from_le_bytes(b);
    (v != 0).then_some(v)
}

/// The ACPI RSDP address from `/sys/firmware/efi/systab` (ACPI 2.0 table preferred).
pub fn rsdp_from_efi_systab(s: &str) -> Option<u64> {
    let find = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key).and_then(parse_hex))
    };
    find("ACPI20=").or_else(|| find("ACPI="))
}

/// The x86_64 direct-map base used when `/proc/kcore` cannot tell (4-level paging, no KASLR).
pub const DEFAULT_PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// x86_64 `__START_KERNEL_map`: kernel-image mappings start here, not the direct map.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// Where the `/proc/kcore` program header table is, from its ELF header (first 64 bytes):
/// `(e_phoff, e_phnum)`. `None` if it is not a little-endian ELF64 core.
pub fn kcore_phdr_table(ehdr: &[u8]) -> Option<(u64, u16)> {
    if ehdr.len() < 64 || &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let phoff = u64::from_le_bytes(ehdr[32..40].try_into().ok()?);
    let phentsize = u16::from_le_bytes([ehdr[54], ehdr[55]]);
    let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]);
    (phentsize == 56).then_some((phoff, phnum))
}

/// `PAGE_OFFSET` from `/proc/kcore`'s program headers: a `PT_LOAD` in the direct map whose
/// `p_paddr` is the start of a RAM range gives `p_vaddr - p_paddr`.
pub fn page_offset_from_kcore(phdrs: &[u8], ram: &[Range]) -> Option<u64> {
    phdrs.chunks_exact(56).find_map(|ph| {
        let p_type = u32::from_le_bytes(ph[0..4].try_into().ok()?);
        let vaddr = u64::from_le_bytes(ph[16..24].try_into().ok()?);
        let paddr = u64::from_le_bytes(ph[24..32].try_into().ok()?);
        let direct_map = (0xff00_0000_0000_0000..START_KERNEL_MAP).contains(&vaddr);
        (p_type == 1 && direct_map && ram.iter().any(|r| r.start == paddr))
            .then(|| vaddr.wrapping_sub(paddr))
            .filter(|off| off.is_multiple_of(4096))
    })
}

/// arm64: the linear map's offset (`p_vaddr - p_paddr`) from `/proc/kcore`'s program headers.
///
/// Every `KCORE_RAM` segment has `p_paddr = __pa(vaddr)`; so does the `KCORE_TEXT` one
/// (`__pa_symbol(_text)`), with another offset, and vmalloc/vmemmap ones have `p_paddr = -1`.
/// Candidates are `PT_LOAD`s in the kernel half (at or above 0xfff0000000000000, VA_BITS ≤ 52)
/// whose `p_paddr` is the start of a RAM range (where `KCORE_RAM` segments start); the offset
/// most of them share wins, ties going to the lowest address (the linear map lies below the
/// kernel image since Linux 5.4).
pub fn linear_offset_from_kcore_arm64(phdrs: &[u8], ram: &[Range]) -> Option<u64> {
    let mut votes: Vec<(u64, usize, u64)> = Vec::new(); // (offset, count, lowest vaddr)
    for ph in phdrs.chunks_exact(56) {
        let p_type = u32::from_le_bytes(ph[0..4].try_into().ok()?);
        let vaddr = u64::from_le_bytes(ph[16..24].try_into().ok()?);
        let paddr = u64::from_le_bytes(ph[24..32].try_into().ok()?);
        if p_type != 1 || vaddr < 0xfff0_0000_0000_0000 || !ram.iter().any(|r| r.start == paddr) {
            continue;
        }
        let off = vaddr.wrapping_sub(paddr);
        if !off.is_multiple_of(4096) {
            continue;
        }
        match votes.iter_mut().find(|v| v.0 == off) {
            Some(v) => {
                v.1 += 1;
                v.2 = v.2.min(vaddr);
            }
            None => votes.push((off, 1, vaddr)),
        }
    }
    votes
        .into_iter()
        .max_by_key(|&(_, count, low)| (count, std::cmp::Reverse(low)))
        .map(|v| v.0)
}

/// The address of symbol `name` in `/proc/kallsyms` text; `None` if it is not listed or reads
/// as 0 (hidden by `kptr_restrict`, or not root).
pub fn kallsyms_address(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?;
            let _type = f.next()?;
            (f.next()? == name && f.next().is_none())
                .then(|| u64::from_str_radix(addr, 16).ok())
                .flatten()
        })
        .filter(|&a| a != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_symbols() {
        let text = "ffff800008000000 t _head\nffff800008010000 T _stext\nffff8000087d0000 T __init_begin\n\
                    ffff800000c41000 t foo_init\t[foo]\nffff800008011000 T _stext_not\n";
        assert_eq!(
            kallsyms_address(text, "_stext"),
            Some(0xffff_8000_0801_0000)
        );
        assert_eq!(
            kallsyms_address(text, "__init_begin"),
            Some(0xffff_8000_087d_0000)
        );
        assert_eq!(kallsyms_address(text, "_text"), None);
        assert_eq!(
            kallsyms_address(text, "foo_init"),
            None,
            "module symbols are not the kernel's"
        );
        assert_eq!(
            kallsyms_address("0000000000000000 T _stext\n", "_stext"),
            None
        );
    }

    #[test]
    fn arm64_linear_offset_from_kcore_headers() {
        let ram = [
            Range {
                start: 0x4000_0000,
                end: 0x7c00_0000,
            },
            Range {
                start: 0x8000_0000,
                end: 0xc000_0000,
            },
        ];
        let linear = 0xffff_0000_0000_0000u64.wrapping_sub(0x4000_0000);
        // kcore order: text first, then vmalloc (paddr -1), then the RAM segments.
        let mut phdrs = phdr(4, 0, 0);
        phdrs.extend(phdr(1, 0xffff_8000_0800_0000, 0x8000_0000)); // _text, at a RAM start here
        phdrs.extend(phdr(1, 0xffff_8000_0000_0000, u64::MAX));
        phdrs.extend(phdr(1, linear.wrapping_add(0x4000_0000), 0x4000_0000));
        phdrs.extend(phdr(1, linear.wrapping_add(0x8000_0000), 0x8000_0000));
        assert_eq!(linear_offset_from_kcore_arm64(&phdrs, &ram), Some(linear));
        // Only the text segment matches a RAM start: a tie of one, the lower address wins,
        // which is what the two-candidate case above would also pick.
        assert_eq!(
            linear_offset_from_kcore_arm64(&phdrs[..3 * 56], &ram),
            Some(0xffff_8000_0800_0000u64.wrapping_sub(0x8000_0000))
        );
        assert_eq!(linear_offset_from_kcore_arm64(&phdrs[..56], &ram), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_hex("10dfd0e0\n"), Some(0x10dfd0e0));
        assert_eq!(parse_hex("0x3ffe0000"), Some(0x3ffe0000));
        assert_eq!(parse_hex(""), None);
        assert_eq!(parse_dec("16777216\n"), Some(16 << 20));
        assert_eq!(
            parse_vmcoreinfo("2a8d000 1024\n"),
            Some((0x2a8d000, 0x1024))
        );
        assert_eq!(parse_vmcoreinfo("0 0\n"), None);
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(
            Lockdown::parse("[none] integrity confidentiality\n"),
            Some(Lockdown::None)
        );
        assert_eq!(
            Lockdown::parse("none [integrity] confidentiality\n"),
            Some(Lockdown::Integrity)
        );
        assert_eq!(
            Lockdown::parse("none integrity [confidentiality]\n"),
            Some(Lockdown::Confidentiality)
        );
        assert_eq!(Lockdown::parse("none integrity\n"), None);
    }

    #[test]
    fn rsdp_sources() {
        let mut bp = vec![0u8; 4096];
        assert_eq!(rsdp_from_boot_params(&bp), None);
        bp[0x70..0x78].copy_from_slice(&0xf5a40u64.to_le_bytes());
        assert_eq!(rsdp_from_boot_params(&bp), Some(0xf5a40));
        assert_eq!(
            rsdp_from_efi_systab("SMBIOS3=0x7f9f4000\nACPI=0x7fb7e000\nACPI20=0x7fb7e014\n"),
            Some(0x7fb7e014)
        );
        assert_eq!(rsdp_from_efi_systab("ACPI=0x7fb7e000\n"), Some(0x7fb7e000));
    }

    fn phdr(p_type: u32, vaddr: u64, paddr: u64) -> Vec<u8> {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&p_type.to_le_bytes());
        p[16..24].copy_from_slice(&vaddr.to_le_bytes());
        p[24..32].copy_from_slice(&paddr.to_le_bytes());
        p
    }

    #[test]
    fn page_offset_from_kcore_headers() {
        let ram = [
            Range {
                start: 0x1000,
                end: 0x9fc00,
            },
            Range {
                start: 0x10_0000,
                end: 0x3ffe_0000,
            },
        ];
        // KASLR'd direct map; the kernel text segment and vmalloc come first, as in kcore.
        let base = 0xffff_9a40_0000_0000u64;
        let mut phdrs = phdr(4, 0, 0);
        phdrs.extend(phdr(1, 0xffff_ffff_8100_0000, 0x2c60_0000));
        phdrs.extend(phdr(1, 0xffff_b000_0000_0000, u64::MAX));
        phdrs.extend(phdr(1, base + 0x1000, 0x1000));
        assert_eq!(page_offset_from_kcore(&phdrs, &ram), Some(base));
        assert_eq!(page_offset_from_kcore(&phdrs[..3 * 56], &ram), None);

        let mut ehdr = vec![0u8; 64];
        ehdr[..6].copy_from_slice(b"\x7fELF\x02\x01");
        ehdr[32..40].copy_from_slice(&64u64.to_le_bytes());
        ehdr[54..56].copy_from_slice(&56u16.to_le_bytes());
        ehdr[56..58].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(kcore_phdr_table(&ehdr), Some((64, 4)));
        ehdr[4] = 1;
        assert_eq!(kcore_phdr_table(&ehdr), None);
    }
}
