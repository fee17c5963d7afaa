//! Generated secrets kept in files that only this user can read.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    // Written whole under another name, then linked into place: a process reading the file
    // meanwhile finds it absent or complete, and of two making it at once, one wins.
    let tmp = private_temp(path, secret.as_bytes())?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((secret, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((text.trim().to_owned(), false))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Writes `contents` to `path`, replacing it, readable by this user only (mode 0600). The file
/// is written whole under another name and renamed over `path`, so a reader (another `prl`
/// command reading `stack.json` while `prl up` writes it) sees the old file or the new one,
/// never a part.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = private_temp(path, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A new file beside `path` holding `contents`, mode 0600, under a name no other writer uses.
fn private_temp(path: &Path, contents: &[u8]) -> std::io::Result<PathBuf> {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        MADE.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(contents));
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
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
    fn a_private_file_is_replaced_whole_while_another_thread_reads_it() {
        let dir = std::env::temp_dir().join(format!("prl-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stack.json");
        let (short, long) = ("{}".repeat(10), "[]".repeat(100_000));
        write_private(&path, short.as_bytes()).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..200 {
                    let text = if i % 2 == 0 { &long } else { &short };
                    write_private(&path, text.as_bytes()).unwrap();
                }
                done.store(true, Ordering::Relaxed);
            });
            while !done.load(Ordering::Relaxed) {
                let read = std::fs::read_to_string(&path).unwrap();
                assert!(read == short || read == long, "read {} bytes", read.len());
            }
        });
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
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
