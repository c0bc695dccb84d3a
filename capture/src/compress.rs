//! Per-page zlib compression for kdump-compressed dumps (`DUMP_DH_COMPRESSED_ZLIB`).
//!
//! makedumpfile compresses every page as an independent zlib stream (RFC 1950 wrapper,
//! `Z_BEST_SPEED`, `deflateReset` between pages) and stores the page raw unless the result is
//! strictly smaller than the page (`write_kdump_pages_cyclic()`; reference §1.5). crash
//! decompresses each page with `uncompress()`. [`PageCompressor`] does the same with
//! [`crate::deflate::PageDeflater`], an encoder made for one page at a time: miniz_oxide's
//! per-stream reset rewrites ~384 KiB of tables per 4 KiB page, which was 40% of the capture
//! kernel's time under QEMU TCG (that module says more, with the numbers).

use crate::deflate::PageDeflater;

/// Compresses pages one at a time, reusing one encoder's tables.
pub struct PageCompressor {
    deflater: PageDeflater,
}

impl PageCompressor {
    /// For pages of `page_size` bytes (the tables are sized for it; other sizes work too).
    pub fn new(page_size: usize) -> Self {
        Self { deflater: PageDeflater::new(page_size) }
    }

    /// Compresses `page` into `out` as one zlib stream. Returns the compressed length only if
    /// it is strictly smaller than `page.len()` (and fits `out`); otherwise `None`, and the
    /// caller stores the page raw.
    pub fn compress(&mut self, page: &[u8], out: &mut [u8]) -> Option<usize> {
        self.deflater.compress(page, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use miniz_oxide::inflate::decompress_to_vec_zlib;

    fn roundtrip(c: &mut PageCompressor, page: &[u8]) -> Option<usize> {
        let mut out = vec![0u8; page.len()];
        let n = c.compress(page, &mut out)?;
        assert!(n < page.len());
        // RFC 1950: CMF byte says deflate with a 32 KiB window.
        assert_eq!(out[0], 0x78);
        assert_eq!(decompress_to_vec_zlib(&out[..n]).unwrap(), page);
        Some(n)
    }

    #[test]
    fn compresses_and_round_trips() {
        let mut c = PageCompressor::new(4096);
        let text: Vec<u8> = (0..4096).map(|i| b"lifeboat kdump "[i % 15]).collect();
        let zeros = vec![0u8; 4096];
        // Reuse the same compressor: every page must be an independent stream.
        for _ in 0..3 {
            assert!(roundtrip(&mut c, &text).unwrap() < 200);
            assert!(roundtrip(&mut c, &zeros).unwrap() < 50);
        }
        let big: Vec<u8> = (0..65536u32).map(|i| (i / 7) as u8).collect();
        roundtrip(&mut c, &big).unwrap();
    }

    #[test]
    fn incompressible_page_is_refused() {
        let mut c = PageCompressor::new(4096);
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = vec![0u8; 4096];
        assert_eq!(c.compress(&noise, &mut out), None);
        // The compressor still works after a refused page.
        let text = vec![b'a'; 4096];
        assert!(roundtrip(&mut c, &text).is_some());
        // A too-small output buffer is a refusal, not a panic.
        assert_eq!(c.compress(&text, &mut out[..4]), None);
        assert_eq!(c.compress(&[], &mut out), None);
    }
}
