//! The cluster key file: one base64 key of 32 bytes per line, the first used to
//! seal, all of them accepted (so a key rotates without downtime: add the new
//! one second on every node, then move it first, then drop the old one).
//! Blank lines and lines starting with `#` are ignored.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::seal::{KEY_BYTES, Key, Keyring};

/// A new random key, base64 (what `ra keygen` prints).
pub fn generate() -> Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(STANDARD.encode(bytes))
}

/// The keys of `text` (the file's contents), checked.
pub fn parse(text: &str) -> Result<Keyring> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = STANDARD
            .decode(line)
            .with_context(|| format!("line {}: not base64", i + 1))?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
            anyhow::anyhow!(
                "line {}: a key is {KEY_BYTES} bytes, this one is {} (make one with `ra keygen`)",
                i + 1,
                b.len()
            )
        })?;
        keys.push(Key::new(bytes));
    }
    Keyring::new(keys).context("no key in it (make one with `ra keygen`)")
}

/// Read the key file at `path`. It should be readable by its owner only: a
/// wider mode is refused, as ssh refuses a private key others can read.
pub fn read(path: &Path) -> Result<Keyring> {
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("cluster key file {}", path.display());
    let meta = std::fs::metadata(path).with_context(context)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "cluster key file {}: mode {mode:o} lets others read it; chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path).with_context(context)?;
    parse(&text).with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_the_first_seals() {
        let (a, b) = (generate().expect("key"), generate().expect("key"));
        assert_ne!(a, b);
        let ring = parse(&format!("# new first\n{b}\n\n{a}\n")).expect("valid");
        assert_eq!(ring.keys().len(), 2);
        let first = parse(&b).expect("valid");
        assert_eq!(
            ring.primary().map(|k| k.id()),
            first.primary().map(|k| k.id())
        );
    }

    #[test]
    fn bad_files_say_which_line() {
        let short = STANDARD.encode([1u8; 16]);
        let message = format!(
            "{:#}",
            parse(&format!("\n{short}\n")).expect_err("16 bytes")
        );
        assert!(
            message.contains("line 2") && message.contains("32 bytes"),
            "{message}"
        );
        let message = format!("{:#}", parse("not base64!").expect_err("garbage"));
        assert!(message.contains("line 1"), "{message}");
        assert!(parse("# nothing\n").is_err());
    }
}
