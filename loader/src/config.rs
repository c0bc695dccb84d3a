//! `/etc/default/lifeboat`: shell variable assignments, read without a shell.
//!
//! Accepted: blank lines, `# comments` (whole line, or after whitespace), `NAME=value` and
//! `export NAME=value`, values bare, `"double quoted"` (with `\"`, `\\`, `\$`, `` \` ``
//! escapes) or `'single quoted'`, and concatenations of these. `$` expansion and command
//! substitution are refused rather than silently misread. Variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `LIFEBOAT_PAYLOAD` | the capture kernel (default `/usr/lib/lifeboat/bzImage`) |
//! | `LIFEBOAT_SYSCALL` | `kexec_file_load` (default) or `kexec_load` |
//! | `LIFEBOAT_OPTIONS` | capture options, e.g. `"lifeboat.serial=ttyS1 lifeboat.action=reboot"` |
//!
//! Other `LIFEBOAT_*` names are errors (typos); other variables are ignored.

use std::fmt;

/// The settings a config file gave (unset ones are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub payload: Option<String>,
    pub syscall: Option<String>,
    pub options: Option<String>,
}

/// A line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

pub const KNOWN: [&str; 3] = ["LIFEBOAT_PAYLOAD", "LIFEBOAT_SYSCALL", "LIFEBOAT_OPTIONS"];

impl Config {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |msg: String| ConfigError { line: i + 1, msg };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line
                .strip_prefix("export ")
                .map(str::trim_start)
                .unwrap_or(line);
            let Some((name, rest)) = line.split_once('=') else {
                return Err(err(format!("expected NAME=value, found '{line}'")));
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                return Err(err(format!("'{name}' is not a variable name")));
            }
            let value = shell_word(rest).map_err(err)?;
            match name {
                "LIFEBOAT_PAYLOAD" => c.payload = Some(value),
                "LIFEBOAT_SYSCALL" => c.syscall = Some(value),
                "LIFEBOAT_OPTIONS" => c.options = Some(value),
                n if n.starts_with("LIFEBOAT_") => {
                    return Err(err(format!(
                        "unknown variable {n} (known: {})",
                        KNOWN.join(", ")
                    )))
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

/// Reads one shell word (the value after `=`), then allows only whitespace and a comment.
fn shell_word(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(ch) => out.push(ch),
                    None => return Err("unterminated single quote".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => return Err("unterminated double quote".into()),
                    },
                    Some('$' | '`') => {
                        return Err(
                            "variable expansion and command substitution are not supported".into(),
                        )
                    }
                    Some(ch) => out.push(ch),
                    None => return Err("unterminated double quote".into()),
                }
            },
            '\\' => {
                match chars.next() {
                    Some(ch) => out.push(ch),
                    None => return Err(
                        "backslash at the end of the line (continuation lines are not supported)"
                            .into(),
                    ),
                }
            }
            '$' | '`' => {
                return Err("variable expansion and command substitution are not supported".into())
            }
            c if c.is_whitespace() => {
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    return Ok(out);
                }
                return Err(format!(
                    "unexpected '{rest}' after the value (quote values with spaces)"
                ));
            }
            ';' | '&' | '|' | '(' | ')' | '<' | '>' => {
                return Err(format!(
                    "'{c}' is shell syntax this file does not support; quote the value"
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_default_file() {
        let text = r#"
# lifeboat settings
LIFEBOAT_PAYLOAD=/usr/lib/lifeboat/bzImage   # the capture kernel
export LIFEBOAT_SYSCALL='kexec_load'
LIFEBOAT_OPTIONS="lifeboat.serial=ttyS1,115200 lifeboat.action=reboot"
OTHER=ignored
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.payload.as_deref(), Some("/usr/lib/lifeboat/bzImage"));
        assert_eq!(c.syscall.as_deref(), Some("kexec_load"));
        assert_eq!(
            c.options.as_deref(),
            Some("lifeboat.serial=ttyS1,115200 lifeboat.action=reboot")
        );
    }

    #[test]
    fn quoting() {
        let v =
            |s: &str| Config::parse(&format!("LIFEBOAT_OPTIONS={s}")).map(|c| c.options.unwrap());
        assert_eq!(v(r#""a \"b\" \$c \n""#).unwrap(), r#"a "b" $c \n"#);
        assert_eq!(v(r#"'x'"y"z"#).unwrap(), "xyz");
        assert_eq!(v("").unwrap(), "");
        assert_eq!(v(r#"a\ b"#).unwrap(), "a b");
        assert_eq!(v("\"# not a comment\"").unwrap(), "# not a comment");
    }

    #[test]
    fn errors_name_the_line() {
        let e = |s: &str| Config::parse(s).unwrap_err();
        assert_eq!(e("\n\nLIFEBOAT_OPTION=x").line, 3);
        assert!(e("LIFEBOAT_OPTION=x")
            .msg
            .contains("unknown variable LIFEBOAT_OPTION"));
        assert!(e("LIFEBOAT_OPTIONS=\"a").msg.contains("unterminated"));
        assert!(e("LIFEBOAT_OPTIONS=a b").msg.contains("quote values"));
        assert!(e("LIFEBOAT_OPTIONS=\"$X\"").msg.contains("expansion"));
        assert!(e("LIFEBOAT_OPTIONS=$(ls)").msg.contains("expansion"));
        assert!(e("just words").msg.contains("NAME=value"));
        assert!(e("LIFEBOAT_SYSCALL=a;b").msg.contains("shell syntax"));
    }
}
