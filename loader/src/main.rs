//! `lifeboat`: the host-side command of the lifeboat kdump capture kernel.
//!
//! Exit codes (docs/loader.md):
//! - `load`, `unload`, `estimate`: 0 success, 1 a check or the kernel refused (the message
//!   says what to do), 2 usage error.
//! - `status`: 0 a crash kernel is loaded, 3 none is loaded, 1 error.
//! - `receive`: 0 a complete dump, 1 the dump is incomplete, 2 usage or I/O error.
//! - `fetch`: 0 a complete dump copied, 1 an incomplete one copied, 2 no dump, a corrupt one,
//!   usage or I/O error.
//! - `serve`: runs until killed; 1 the server failed, 2 usage error (bad size, cannot listen).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use lifeboat_loader::commands::{self, LoadRequest};
use lifeboat_loader::host::Host;
use lifeboat_loader::receive::{printable, receive, Progress, ReceiveOptions, ReceiveReport};
use lifeboat_loader::serial::{baud_rate, InputKind, SerialInput};

#[derive(Parser)]
#[command(name = "lifeboat", version, about = "lifeboat: a tiny kdump capture kernel, host side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load lifeboat as the crash kernel (checks everything first).
    Load(LoadArgs),
    /// Unload the crash kernel.
    Unload,
    /// Show the reservation, what is loaded and with which options (exit 0 loaded, 3 not).
    Status,
    /// How much crashkernel= lifeboat needs on this host, next to a Linux capture kernel.
    Estimate(EstimateArgs),
    /// Rebuild a dump from the capture kernel's serial output (a live device or a saved file).
    Receive(ReceiveArgs),
    /// Copy the dump a `blk` capture wrote to a disk (e.g. /dev/vdb) into a file.
    Fetch(FetchArgs),
    /// Receive dumps from capture kernels over TCP (docs/net-protocol.md).
    Serve(lifeboat_loader::serve::ServeArgs),
}

#[derive(Args)]
struct LoadArgs {
    #[cfg_attr(
        not(target_arch = "aarch64"),
        doc = "The capture kernel (default: /usr/lib/lifeboat/bzImage, else bzImage next to lifeboat)."
    )]
    #[cfg_attr(
        target_arch = "aarch64",
        doc = "The capture kernel (default: /usr/lib/lifeboat/Image, else Image next to lifeboat)."
    )]
    #[arg(long, value_name = "PATH")]
    payload: Option<PathBuf>,
    /// How to load it: the kernel builds the crash header (kexec_file_load, default) or
    /// lifeboat does (kexec_load).
    #[arg(long, value_name = "SYSCALL", value_parser = ["kexec_file_load", "kexec_load"])]
    syscall: Option<String>,
    /// Read LIFEBOAT_PAYLOAD, LIFEBOAT_SYSCALL and LIFEBOAT_OPTIONS from FILE (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Replace a crash kernel that something else loaded.
    #[arg(long)]
    force: bool,
    /// Run every check and show what would be loaded, without loading.
    #[arg(long)]
    dry_run: bool,
    /// Capture options, e.g. lifeboat.action=halt lifeboat.serial=ttyS1 (docs/capture-options.md).
    #[arg(value_name = "OPTION")]
    options: Vec<String>,
}

#[derive(Args)]
struct FetchArgs {
    /// The dump disk (e.g. /dev/vdb), or a file holding a copy of it; opened read-only.
    #[arg(value_name = "DEVICE|FILE")]
    source: PathBuf,
    /// Where to write the dump (mode 0600).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct EstimateArgs {
    /// The capture kernel to size (default as for `load`).
    #[arg(long, value_name = "PATH")]
    payload: Option<PathBuf>,
}

#[derive(Args)]
struct ReceiveArgs {
    /// Serial device (e.g. /dev/ttyS0), captured file, or `-` for standard input.
    #[arg(long, value_name = "DEVICE|FILE")]
    serial: PathBuf,
    /// Where to write the kdump-compressed dump.
    #[arg(short = 'o', long = "output", value_name = "DUMP")]
    output: PathBuf,
    /// Also write the flattened stream as sent (rebuild with `makedumpfile -R DUMP < FILE`).
    #[arg(long, value_name = "FILE")]
    flat: Option<PathBuf>,
    /// Save the console text to FILE.
    #[arg(long, value_name = "FILE")]
    console: Option<PathBuf>,
    /// Give up on a device or pipe after SECS seconds without input (default: wait for END).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Set a serial device to this speed (default: leave it as configured).
    #[arg(long, value_name = "RATE")]
    baud: Option<u32>,
    /// Do not echo console text to stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host = Host::default();
    match cli.command {
        Command::Load(a) => {
            let req = LoadRequest {
                payload: a.payload,
                syscall: a.syscall,
                config: a.config,
                force: a.force,
                dry_run: a.dry_run,
                options: a.options,
            };
            done(commands::load(req, &host))
        }
        Command::Unload => done(commands::unload(&host)),
        Command::Status => match commands::status(&host) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => done(Err(e)),
        },
        Command::Estimate(a) => done(commands::estimate(&host, a.payload)),
        Command::Receive(args) => cmd_receive(args),
        Command::Fetch(a) => ExitCode::from(lifeboat_loader::fetch::cmd(&a.source, &a.output, a.force)),
        Command::Serve(a) => lifeboat_loader::serve::cmd_serve(a),
    }
}

/// Exit 0, or print the failure and exit 1.
fn done(r: Result<(), commands::Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lifeboat: {e}");
            ExitCode::from(1)
        }
    }
}

fn cmd_receive(args: ReceiveArgs) -> ExitCode {
    let baud = match args.baud.map(|r| baud_rate(r).ok_or(r)).transpose() {
        Ok(b) => b,
        Err(r) => {
            eprintln!("lifeboat: unsupported --baud {r}; use a standard rate such as 115200");
            return ExitCode::from(2);
        }
    };
    let timeout = args.timeout.map(Duration::from_secs);
    let input = match SerialInput::open(&args.serial, timeout, baud) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("lifeboat: cannot open {}: {e}", args.serial.display());
            return ExitCode::from(2);
        }
    };
    let opts = ReceiveOptions {
        dump: args.output.clone(),
        flat: args.flat.clone(),
        console: args.console.clone(),
        stop_at_end: input.kind() != InputKind::File,
    };
    if input.kind() == InputKind::Tty {
        eprintln!("lifeboat: listening on {} …", args.serial.display());
    }
    let quiet = args.quiet;
    let report = receive(input, &opts, &mut |p| match p {
        Progress::Console(line) if !quiet => eprintln!("console| {}", printable(line)),
        Progress::Console(_) => {}
        Progress::Start(info) => {
            eprintln!("lifeboat: capture kernel: {}", printable(info.as_bytes()))
        }
        Progress::Problem(msg) => eprintln!("lifeboat: {msg}"),
        Progress::Corrupt(at) => {
            eprintln!("lifeboat: corrupt frame at input offset {at:#x} dropped")
        }
    });
    match report {
        Ok(r) => summarize(&r, &args),
        Err(e) => {
            eprintln!("lifeboat: {e}");
            ExitCode::from(2)
        }
    }
}

fn summarize(r: &ReceiveReport, args: &ReceiveArgs) -> ExitCode {
    let dump = if r.dump_written {
        format!("{} ({} bytes)", args.output.display(), r.dump_bytes)
    } else {
        "no dump written".to_string()
    };
    println!(
        "received {} input bytes: {} frames ({} DATA, {} stream bytes), {} corrupt, {} console \
         lines; {}",
        r.input_bytes,
        r.frames,
        r.data_frames,
        r.stream_bytes,
        r.corrupt.len(),
        r.console_lines,
        dump
    );
    if let Some(log) = &r.kernel_log {
        println!("{}", log.summary());
    }
    if r.is_complete() {
        println!("dump complete");
        ExitCode::SUCCESS
    } else {
        if r.marked_incomplete {
            println!("header status marked DUMP_DH_COMPRESSED_INCOMPLETE");
        }
        println!("dump INCOMPLETE: {}", r.problems.join("; "));
        ExitCode::from(1)
    }
}
