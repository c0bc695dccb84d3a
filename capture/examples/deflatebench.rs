//! Compares per-page zlib compressors on real memory pages, the way a kdump-compressed dump
//! uses them: every page an independent stream, stored raw unless strictly smaller.
//!
//! ```sh
//! cargo run --release -p lifeboat-capture --example deflatebench -- FILE... [--page N] [--max N] [--stride N] [--only NAME] [--reps N] [--no-verify]
//! ```
//!
//! Each FILE (a vmlinux, an ELF memory image, ...) is cut into pages of `--page` bytes
//! (default 4096); all-zero pages are skipped (a dump excludes them), then every `--stride`-th
//! page is kept, at most `--max` (default 30000); `--only` picks compressors by name (comma-separated); the
//! time is the best of `--reps` passes (default 3). For each compressor it prints µs per page,
//! the bytes a dump would hold (compressed or raw) and how many pages compressed. It also checks
//! that the system zlib decodes every stream of `deflate::PageDeflater`, and times a zero page
//! (the fixed cost per page). Run the binary under `qemu-x86_64-static` to approximate the
//! capture kernel under TCG.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use lifeboat_capture::deflate::PageDeflater;
use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressionStrategy, CompressorOxide, TDEFLFlush,
    TDEFLStatus,
};

/// miniz_oxide at any level, reset per page (what `PageCompressor` did at level 1 before
/// `PageDeflater`).
struct Miniz(Box<CompressorOxide>);

impl Miniz {
    fn new(level: i32) -> Self {
        let flags = create_comp_flags_from_zip_params(level, 15, CompressionStrategy::Default as i32);
        Miniz(Box::new(CompressorOxide::new(flags)))
    }
    fn compress(&mut self, page: &[u8], out: &mut [u8]) -> Option<usize> {
        self.0.reset();
        let out = &mut out[..page.len() - 1];
        let (status, consumed, produced) = compress(&mut self.0, page, out, TDEFLFlush::Finish);
        (status == TDEFLStatus::Done && consumed == page.len()).then_some(produced)
    }
}

/// The system zlib (makedumpfile's compressor), `deflateReset` per page.
struct Zlib(Compress);

impl Zlib {
    fn new(level: u32) -> Self {
        Zlib(Compress::new(Compression::new(level), true))
    }
    fn compress(&mut self, page: &[u8], out: &mut [u8]) -> Option<usize> {
        self.0.reset();
        let out = &mut out[..page.len() - 1];
        match self.0.compress(page, out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => Some(self.0.total_out() as usize),
            _ => None,
        }
    }
}

type PageFn<'a> = Box<dyn FnMut(&[u8], &mut [u8]) -> Option<usize> + 'a>;

/// Times each compressor over all pages, `reps` rounds with the compressors interleaved (the
/// host is shared: the best round of each is printed), and over a zero page.
fn run(reps: usize, pages: &[&[u8]], page_size: usize, mut compressors: Vec<(&str, PageFn)>) {
    let mut out = vec![0u8; page_size];
    let mut best = vec![f64::MAX; compressors.len()];
    let mut sizes = vec![(0usize, 0usize); compressors.len()];
    for _ in 0..reps {
        for (k, (_, f)) in compressors.iter_mut().enumerate() {
            let t = Instant::now();
            let (mut bytes, mut compressed) = (0usize, 0usize);
            for page in pages {
                match f(page, &mut out) {
                    Some(n) => {
                        bytes += n;
                        compressed += 1;
                    }
                    None => bytes += page.len(),
                }
            }
            best[k] = best[k].min(t.elapsed().as_secs_f64());
            sizes[k] = (bytes, compressed);
        }
    }
    // Fixed cost: a zero page, many times.
    let zero = vec![0u8; page_size];
    let zero_reps = 200 * reps;
    for (k, (name, f)) in compressors.iter_mut().enumerate() {
        let t = Instant::now();
        for _ in 0..zero_reps {
            black_box(f(black_box(&zero), &mut out));
        }
        let zero_us = t.elapsed().as_secs_f64() * 1e6 / zero_reps as f64;
        println!(
            "{name:<14} {:>9.2} µs/page {:>13} bytes {:>8} compressed  zero page {:>7.2} µs",
            best[k] * 1e6 / pages.len() as f64,
            sizes[k].0,
            sizes[k].1,
            zero_us
        );
    }
}

fn main() -> ExitCode {
    let mut files = Vec::new();
    let (mut page_size, mut max, mut stride) = (4096usize, 30000usize, 1usize);
    let mut only: Option<String> = None;
    let mut reps = 3;
    let mut verify = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--page" => page_size = num("--page"),
            "--max" => max = num("--max"),
            "--stride" => stride = num("--stride").max(1),
            "--only" => only = args.next(),
            "--reps" => reps = num("--reps").max(1),
            "--no-verify" => verify = false,
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        eprintln!("usage: deflatebench FILE... [--page N] [--max N] [--stride N] [--only NAME] [--reps N] [--no-verify]");
        return ExitCode::FAILURE;
    }
    let mut data = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut kept = 0;
        for page in bytes
            .chunks_exact(page_size)
            .filter(|p| p.iter().any(|&b| b != 0))
            .step_by(stride)
            .take(max.saturating_sub(data.len() / page_size))
        {
            data.extend_from_slice(page);
            kept += 1;
        }
        println!("{f}: {kept} pages");
    }
    let pages: Vec<&[u8]> = data.chunks_exact(page_size).collect();
    println!("{} non-zero pages of {} bytes ({} bytes)", pages.len(), page_size, data.len());

    // Every PageDeflater stream must decode with the system zlib.
    let mut d = PageDeflater::new(page_size);
    let mut out = vec![0u8; page_size];
    let mut back = vec![0u8; page_size + 1];
    let mut bad = 0;
    for page in pages.iter().filter(|_| verify) {
        if let Some(n) = d.compress(page, &mut out) {
            let mut z = Decompress::new(true);
            let ok = matches!(z.decompress(&out[..n], &mut back, FlushDecompress::Finish), Ok(Status::StreamEnd))
                && z.total_in() as usize == n
                && &back[..z.total_out() as usize] == *page;
            bad += usize::from(!ok);
        }
    }
    println!("PageDeflater streams rejected or wrong by zlib: {bad}");

    let mut m1 = Miniz::new(1);
    let mut m2 = Miniz::new(2);
    let mut z1 = Zlib::new(1);
    let mut z6 = Zlib::new(6);
    let all: Vec<(&str, PageFn)> = vec![
        ("miniz L1", Box::new(|p: &[u8], o: &mut [u8]| m1.compress(p, o))),
        ("miniz L2", Box::new(|p: &[u8], o: &mut [u8]| m2.compress(p, o))),
        ("zlib L1", Box::new(|p: &[u8], o: &mut [u8]| z1.compress(p, o))),
        ("zlib L6", Box::new(|p: &[u8], o: &mut [u8]| z6.compress(p, o))),
        ("PageDeflater", Box::new(|p: &[u8], o: &mut [u8]| d.compress(p, o))),
    ];
    let picked = all
        .into_iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|o| {
            o.split(',').any(|o| name.to_lowercase().contains(&o.trim().to_lowercase()))
        }))
        .collect();
    run(reps, &pages, page_size, picked);
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
