//! `/run/lifeboat/state`: what `lifeboat load` loaded, for `status` and `unload`.
//!
//! `key=value` lines (`payload`, `version`, `syscall`, `options`, `loaded_at`,
//! `loaded_at_unix`). `/run` is a tmpfs, so the file lives exactly as long as the loaded
//! capture kernel can (until reboot or `lifeboat unload`).

use crate::kexec::Syscall;

pub const STATE_FILE: &str = "/run/lifeboat/state";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub payload: String,
    pub version: String,
    pub syscall: Syscall,
    /// The capture options (without `elfcorehdr=`).
    pub options: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
}

impl State {
    pub fn to_text(&self) -> String {
        format!(
            "# written by lifeboat load; read by lifeboat status and lifeboat unload\n\
             payload={}\nversion={}\nsyscall={}\noptions={}\nloaded_at={}\nloaded_at_unix={}\n",
            self.payload,
            self.version,
            self.syscall.name(),
            self.options,
            utc(self.loaded_at),
            self.loaded_at
        )
    }

    /// `None` if a required key is missing or malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let get = |k: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|r| r.strip_prefix('='))
                    .map(str::to_string)
            })
        };
        Some(Self {
            payload: get("payload")?,
            version: get("version")?,
            syscall: Syscall::from_name(&get("syscall")?)?,
            options: get("options").unwrap_or_default(),
            loaded_at: get("loaded_at_unix")?.parse().ok()?,
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Days to civil date: the era/day-of-era method described by H. Hinnant ("chrono-Compatible
    // Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = State {
            payload: "/usr/lib/lifeboat/bzImage".into(),
            version: "0.1.0".into(),
            syscall: Syscall::KexecLoad,
            options: "lifeboat.action=halt lifeboat.serial=ttyS1".into(),
            loaded_at: 1_700_000_000,
        };
        let t = s.to_text();
        assert!(t.contains("loaded_at=2023-11-14T22:13:20Z\n"));
        assert_eq!(State::parse(&t), Some(s));
        assert_eq!(State::parse("payload=x\n"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
