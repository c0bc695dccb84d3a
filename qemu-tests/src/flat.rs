//! An independent reader of makedumpfile's flattened format (reference §2): a 4096-byte start
//! header ("makedumpfile", type 1, version 1, big-endian), then records
//! `{i64 offset, i64 size}` + data (big-endian), ended by `(-1, -1)`.

/// Size of the flattened start header (`MAX_SIZE_MDF_HEADER`).
pub const FLAT_HEADER_SIZE: usize = 4096;

/// What was found while rebuilding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlatSummary {
    pub records: u64,
    pub payload_bytes: u64,
}

/// Rebuild the file a flattened stream describes; strict: anything `makedumpfile -R` would
/// reject, or a zero-length record, or bytes after the end marker, is an error.
pub fn rebuild(flat: &[u8]) -> Result<(Vec<u8>, FlatSummary), String> {
    if flat.len() < FLAT_HEADER_SIZE {
        return Err(format!(
            "flattened stream is {} bytes, shorter than its 4096-byte header",
            flat.len()
        ));
    }
    if &flat[..16] != b"makedumpfile\0\0\0\0" {
        return Err(format!(
            "flattened header signature is {:?}, not \"makedumpfile\"",
            String::from_utf8_lossy(&flat[..16])
        ));
    }
    let ty = be_i64(&flat[16..24]);
    let version = be_i64(&flat[24..32]);
    if ty != 1 || version != 1 {
        return Err(format!(
            "flattened header type {ty} version {version}; expected 1 and 1"
        ));
    }
    let mut out = Vec::new();
    let mut summary = FlatSummary::default();
    let mut at = FLAT_HEADER_SIZE;
    loop {
        let Some(h) = flat.get(at..at + 16) else {
            return Err(format!(
                "flattened stream ends at {at:#x} without the (-1,-1) end marker after {} records",
                summary.records
            ));
        };
        let (offset, size) = (be_i64(&h[..8]), be_i64(&h[8..]));
        at += 16;
        if offset == -1 && size == -1 {
            break;
        }
        if offset < 0 || size <= 0 {
            return Err(format!(
                "flattened record {} at stream offset {:#x} has offset {offset} size {size}",
                summary.records,
                at - 16
            ));
        }
        let (offset, size) = (offset as usize, size as usize);
        let Some(data) = flat.get(at..at + size) else {
            return Err(format!(
                "flattened record {} of {size} bytes is cut off at the end of the stream",
                summary.records
            ));
        };
        if out.len() < offset + size {
            out.resize(offset + size, 0);
        }
        out[offset..offset + size].copy_from_slice(data);
        at += size;
        summary.records += 1;
        summary.payload_bytes += size as u64;
    }
    if at != flat.len() {
        return Err(format!(
            "{} bytes follow the flattened end marker",
            flat.len() - at
        ));
    }
    Ok((out, summary))
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b.try_into().unwrap())
}

#[cfg(test)]
pub(crate) fn encode(records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut s = vec![0u8; FLAT_HEADER_SIZE];
    s[..12].copy_from_slice(b"makedumpfile");
    s[16..24].copy_from_slice(&1i64.to_be_bytes());
    s[24..32].copy_from_slice(&1i64.to_be_bytes());
    for (off, data) in records {
        s.extend_from_slice(&(*off as i64).to_be_bytes());
        s.extend_from_slice(&(data.len() as i64).to_be_bytes());
        s.extend_from_slice(data);
    }
    s.extend_from_slice(&(-1i64).to_be_bytes());
    s.extend_from_slice(&(-1i64).to_be_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_any_order() {
        let s = encode(&[(8, b"world"), (0, b"hello, "), (20, b"!")]);
        let (f, sum) = rebuild(&s).unwrap();
        assert_eq!(&f[..], b"hello, \0world\0\0\0\0\0\0\0!");
        assert_eq!(
            sum,
            FlatSummary {
                records: 3,
                payload_bytes: 13
            }
        );
    }

    #[test]
    fn rejects_bad_streams() {
        let good = encode(&[(0, b"abc")]);
        assert!(rebuild(&good[..good.len() - 16])
            .unwrap_err()
            .contains("end marker"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(rebuild(&trailing).unwrap_err().contains("follow"));
        let mut sig = good.clone();
        sig[0] = b'M';
        assert!(rebuild(&sig).unwrap_err().contains("signature"));
        let empty = encode(&[(0, b"")]);
        assert!(rebuild(&empty).unwrap_err().contains("size 0"));
        let mut cut = encode(&[(0, b"abcdef")]);
        cut.truncate(FLAT_HEADER_SIZE + 16 + 3);
        assert!(rebuild(&cut).unwrap_err().contains("cut off"));
    }
}
