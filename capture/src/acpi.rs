//! Just enough ACPI to power the machine off (`lifeboat.action=poweroff`): find the FADT's
//! PM1 control ports and the `\_S5` sleep type in the DSDT.
//!
//! Facts from the ACPI specification (6.x): RSDP ("RSD PTR ", rev 2 has the XSDT address at
//! offset 24), SDT header of 36 bytes, FADT ("FACP") PM1a_CNT_BLK at offset 64, PM1b_CNT_BLK at
//! 68, DSDT at 40 and X_DSDT at 140; S5 entered by writing SLP_TYPx << 10 | SLP_EN (1 << 13)
//! to PM1x_CNT. The `\_S5_` package is found by a byte search of the DSDT's AML, the usual
//! approach of small kernels: a full AML interpreter is far beyond what a capture kernel needs.
//! Every table is read through [`PhysRead`], so garbage tables give an error, not a fault.

use crate::phys::PhysRead;
use alloc::vec;
use core::fmt;

/// How to enter S5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerOff {
    pub pm1a_cnt: u16,
    pub pm1b_cnt: Option<u16>,
    pub slp_typa: u16,
    pub slp_typb: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    NoRsdp,
    NoFadt,
    NoS5,
    Unreadable(u64),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp => write!(f, "no ACPI RSDP found"),
            AcpiError::NoFadt => write!(f, "no ACPI FADT with a PM1a control port"),
            AcpiError::NoS5 => write!(f, "the DSDT has no \\_S5 sleep state"),
            AcpiError::Unreadable(a) => write!(f, "ACPI table at {:#x} is unreadable", a),
        }
    }
}

const MAX_TABLE: u32 = 1 << 20;

fn read(mem: &dyn PhysRead, addr: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
    mem.read(addr, buf).map_err(|_| AcpiError::Unreadable(addr))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// Find the RSDP: at `hint` (boot_params / PVH), else in the BIOS area 0xE0000-0xFFFFF.
fn find_rsdp(mem: &dyn PhysRead, hint: Option<u64>) -> Result<[u8; 36], AcpiError> {
    let mut rsdp = [0u8; 36];
    if let Some(h) = hint {
        read(mem, h, &mut rsdp[..20])?;
        if &rsdp[..8] == b"RSD PTR " && checksum_ok(&rsdp[..20]) {
            if rsdp[15] >= 2 {
                read(mem, h, &mut rsdp)?;
            }
            return Ok(rsdp);
        }
    }
    let mut area = vec![0u8; 0x20000];
    read(mem, 0xE0000, &mut area)?;
    for off in (0..area.len() - 36).step_by(16) {
        let c = &area[off..off + 36];
        if &c[..8] == b"RSD PTR " && checksum_ok(&c[..20]) {
            rsdp.copy_from_slice(c);
            return Ok(rsdp);
        }
    }
    Err(AcpiError::NoRsdp)
}

/// Read a whole SDT (header then body), bounded to 1 MiB.
fn read_table(mem: &dyn PhysRead, addr: u64) -> Result<alloc::vec::Vec<u8>, AcpiError> {
    let mut hdr = [0u8; 36];
    read(mem, addr, &mut hdr)?;
    let len = u32_at(&hdr, 4).unwrap_or(0);
    if !(36..=MAX_TABLE).contains(&len) {
        return Err(AcpiError::Unreadable(addr));
    }
    let mut t = vec![0u8; len as usize];
    read(mem, addr, &mut t)?;
    Ok(t)
}

/// Find how to power off.
pub fn find_poweroff(mem: &dyn PhysRead, rsdp_hint: Option<u64>) -> Result<PowerOff, AcpiError> {
    let rsdp = find_rsdp(mem, rsdp_hint)?;
    let (root, entry_size) = match (rsdp[15] >= 2).then(|| u64_at(&rsdp, 24)).flatten() {
        Some(x) if x != 0 => (x, 8),
        _ => (u64::from(u32_at(&rsdp, 16).unwrap_or(0)), 4),
    };
    let root_table = read_table(mem, root)?;
    let mut fadt = None;
    for e in root_table[36..].chunks_exact(entry_size) {
        let addr = if entry_size == 8 { u64_at(e, 0) } else { u32_at(e, 0).map(u64::from) };
        let Some(addr) = addr else { continue };
        let mut sig = [0u8; 4];
        if read(mem, addr, &mut sig).is_ok() && &sig == b"FACP" {
            fadt = Some(read_table(mem, addr)?);
            break;
        }
    }
    let fadt = fadt.ok_or(AcpiError::NoFadt)?;
    let pm1a = u32_at(&fadt, 64).filter(|&p| p != 0 && p <= 0xffff).ok_or(AcpiError::NoFadt)? as u16;
    let pm1b = u32_at(&fadt, 68).filter(|&p| p != 0 && p <= 0xffff).map(|p| p as u16);
    let dsdt = u64_at(&fadt, 140).filter(|&x| x != 0 && fadt.len() >= 148).or_else(|| u32_at(&fadt, 40).map(u64::from));
    let dsdt = read_table(mem, dsdt.ok_or(AcpiError::NoS5)?)?;
    let (a, b) = parse_s5(&dsdt).ok_or(AcpiError::NoS5)?;
    Ok(PowerOff { pm1a_cnt: pm1a, pm1b_cnt: pm1b, slp_typa: a, slp_typb: b })
}

/// `Name(_S5_, Package(){ a, b, ... })` in AML: "_S5_" 0x12 PkgLength NumElements elements,
/// each ZeroOp (0), OneOp (1) or BytePrefix (0x0A) value.
fn parse_s5(aml: &[u8]) -> Option<(u16, u16)> {
    let pos = aml.windows(4).position(|w| w == b"_S5_")?;
    let mut i = pos + 4;
    if *aml.get(i)? != 0x12 {
        return None;
    }
    i += 1;
    let lead = *aml.get(i)?;
    i += 1 + usize::from(lead >> 6); // PkgLength: extra bytes in bits 7:6
    i += 1; // NumElements
    let mut vals = [0u16; 2];
    for v in &mut vals {
        match *aml.get(i)? {
            0x00 => {
                *v = 0;
                i += 1
            }
            0x01 => {
                *v = 1;
                i += 1
            }
            0x0A => {
                *v = u16::from(*aml.get(i + 1)?);
                i += 2
            }
            _ => return None,
        }
    }
    Some((vals[0] & 7, vals[1] & 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_package_forms() {
        let mut aml = b"junk\x08_S5_\x12\x06\x04\x0a\x05\x00\x00\x00".to_vec();
        assert_eq!(parse_s5(&aml), Some((5, 0)));
        aml = b"\x08_S5_\x12\x04\x02\x01\x0a\x07".to_vec();
        assert_eq!(parse_s5(&aml), Some((1, 7)));
        assert_eq!(parse_s5(b"_S5_\x13"), None);
        assert_eq!(parse_s5(b"_S5_\x12\x06"), None);
    }
}
