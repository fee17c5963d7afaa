//! Which files a job may make this daemon read. A spec names dataset files, model directories
//! and (through the log) checkpoints; whoever can submit one must not be able to make the daemon
//! read `/dev/zero`, the service's secrets or another user's files, nor learn from an error
//! message which files exist. So every path a job names must lie under one of the daemon's data
//! roots (after symbolic links are followed), dataset files must be regular files within a size
//! limit, and a path outside the roots is refused with the same words whether it exists or not.
//!
//! The check runs once, before the job's work starts; a file swapped for a link between the check
//! and the read is outside what this guards against (that needs write access under a root).

use crate::data::files::FileSet;
use prl_schema::datasets::registered_reference;
use prl_schema::jobs::JobMessage;
use prl_schema::spec::ModelRef;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Debug)]
pub struct FileAccess {
    roots: Vec<PathBuf>,
    max_dataset_bytes: u64,
}

/// What a dataset or model may be, for the checks that differ.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dataset,
    Checkpoint,
    ModelDir,
}

impl FileAccess {
    /// Paths under `roots` (relative ones from the working directory) may be read, dataset files
    /// up to `max_dataset_bytes`.
    pub fn new(roots: &[PathBuf], max_dataset_bytes: u64) -> Self {
        let roots = roots
            .iter()
            .map(|root| {
                let absolute = absolute(root);
                // A root that is a link counts where it leads, as the files under it will.
                absolute.canonicalize().unwrap_or(absolute)
            })
            .collect();
        FileAccess {
            roots,
            max_dataset_bytes,
        }
    }

    /// Whether the daemon may read every file `job` names; the refusal is the job's failure.
    pub fn admit(&self, job: &JobMessage) -> Result<(), String> {
        for (field, dataset) in job.stage.datasets() {
            let reference = dataset.as_str();
            if let Some((name, split, _)) = registered_reference(reference) {
                if let Some(found) = job.datasets.get(&format!("{name}:{split}")) {
                    self.check(Path::new(&found.uri), Kind::Dataset)
                        .map_err(|e| format!("{field} (dataset {name}, split {split}): {e}"))?;
                }
            } else if let Some(set) = FileSet::parse(reference) {
                self.check(set.path, Kind::Dataset)
                    .map_err(|e| format!("{field}: {e}"))?;
            }
        }
        if let ModelRef::Path(dir) = &job.model {
            self.check(Path::new(dir), Kind::ModelDir)
                .map_err(|e| format!("model: {e}"))?;
        }
        for (what, checkpoint) in [
            ("input checkpoint", &job.input_checkpoint),
            ("checkpoint to resume from", &job.resume_from),
        ] {
            let Some(path) = checkpoint
                .as_ref()
                .and_then(|c| c.uri.strip_prefix("file://"))
            else {
                continue;
            };
            // A directory from the store; before it, the weights file.
            let kind = match path.ends_with('/') {
                true => Kind::ModelDir,
                false => Kind::Checkpoint,
            };
            self.check(Path::new(path), kind)
                .map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(())
    }

    fn check(&self, path: &Path, kind: Kind) -> Result<(), String> {
        let outside = || {
            format!(
                "{} is outside the daemon's data roots ({}); start prl-trainer with --data-root \
                 to allow it",
                path.display(),
                self.roots_shown()
            )
        };
        // Judged on the path as written first, so that nothing is looked up outside the roots.
        if !self.holds(&absolute(path)) {
            return Err(outside());
        }
        let real = path
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !self.holds(&real) {
            return Err(outside());
        }
        let metadata =
            std::fs::metadata(&real).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match kind {
            Kind::ModelDir if !metadata.is_dir() => {
                Err(format!("{} is not a directory", path.display()))
            }
            Kind::Dataset | Kind::Checkpoint if !metadata.is_file() => {
                Err(format!("{} is not a regular file", path.display()))
            }
            Kind::Dataset if metadata.len() > self.max_dataset_bytes => Err(format!(
                "{} holds {} bytes, more than the daemon reads for a dataset ({}; \
                 --max-dataset-bytes)",
                path.display(),
                metadata.len(),
                self.max_dataset_bytes
            )),
            _ => Ok(()),
        }
    }

    fn holds(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    fn roots_shown(&self) -> String {
        let shown: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        shown.join(", ")
    }
}

/// `path` from the working directory, with `.` and `..` taken away without looking at the disk.
fn absolute(path: &Path) -> PathBuf {
    let joined = std::env::current_dir().unwrap_or_default().join(path);
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("prl-access-{name}-{}", std::process::id()));
        std::fs::create_dir_all(path.join("root")).unwrap();
        Dir(path)
    }

    #[test]
    fn paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not() {
        let d = dir("outside");
        let access = FileAccess::new(&[d.0.join("root")], 1 << 20);
        let refusal = |path: &Path| access.check(path, Kind::Dataset).unwrap_err();
        let missing = refusal(Path::new("/etc/no-such-file"));
        let present = refusal(Path::new("/etc/hostname"));
        assert!(
            present.contains("outside the daemon's data roots"),
            "{present}"
        );
        assert_eq!(
            missing.replace("no-such-file", "X"),
            present.replace("hostname", "X")
        );
        // Climbing out with `..` or through a link is the same.
        let climbing = d.0.join("root/../../../etc/hostname");
        assert!(refusal(&climbing).contains("outside"));
        std::os::unix::fs::symlink("/etc/hostname", d.0.join("root/link")).unwrap();
        assert!(refusal(&d.0.join("root/link")).contains("outside"));
    }

    #[test]
    fn datasets_must_be_regular_files_within_the_limit() {
        let d = dir("limit");
        let access = FileAccess::new(&[d.0.join("root"), "/dev".into()], 10);
        std::fs::write(d.0.join("root/small.jsonl"), "0123456789").unwrap();
        std::fs::write(d.0.join("root/big.jsonl"), "0123456789A").unwrap();
        assert_eq!(
            access.check(&d.0.join("root/small.jsonl"), Kind::Dataset),
            Ok(())
        );
        let big = access
            .check(&d.0.join("root/big.jsonl"), Kind::Dataset)
            .unwrap_err();
        assert!(big.contains("11 bytes"), "{big}");
        let device = access.check(Path::new("/dev/zero"), Kind::Dataset);
        assert!(device.unwrap_err().contains("not a regular file"));
        let missing = access.check(&d.0.join("root/none.jsonl"), Kind::Dataset);
        assert!(missing.unwrap_err().contains("cannot read"));
        assert!(access.check(&d.0.join("root"), Kind::ModelDir).is_ok());
    }
}
