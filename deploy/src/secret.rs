//! Generated secrets kept in files that only this user can read.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The secret in `path`, made there (48 hex digits, mode 0600) if the file does not exist.
/// Returns it and whether it was made now.
pub fn secret_file(path: &Path) -> Result<(String, bool)> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok((text.trim().to_owned(), false));
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(secret.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((secret, true))
}

/// Writes `contents` to `path`, replacing it, readable by this user only (a file made now gets
/// mode 0600).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}

/// `urls` (one, or several separated by commas) with their passwords replaced by `***`, for
/// messages and logs.
pub fn redacted(urls: &str) -> String {
    let redact = |url: &str| match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    urls.split(',').map(redact).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_readable_only_by_its_owner() {
        let dir = std::env::temp_dir().join(format!("prl-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let (first, made) = secret_file(&path).unwrap();
        assert!(made);
        assert_eq!(first.len(), 48);
        assert_eq!(secret_file(&path).unwrap(), (first, false));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn passwords_are_left_out_of_printed_urls() {
        assert_eq!(
            redacted("postgres://postgres:s3cr3t@127.0.0.1:5/prl"),
            "postgres://postgres:***@127.0.0.1:5/prl"
        );
        assert_eq!(
            redacted("nats://prl:a@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://prl:***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
    }
}
