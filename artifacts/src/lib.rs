//! The artifact store: where checkpoints (and the files they are made of) live so that any host
//! can read what another wrote. A store is named by URL: `file:///shared/dir` or
//! `s3://bucket/prefix` on AWS or any S3-compatible server (endpoint, region and credentials from
//! [`S3Options`], else from the standard `AWS_*` variables), through `object_store`.
//!
//! A stored directory is its files plus a `manifest.json` naming each file's sha256 and size,
//! written last: a directory whose manifest is there is complete. The directory's hash is the
//! manifest's, so one hash checks every byte. Readers keep a local mirror of the store's keys
//! (a host's data directory): what is already there and matches the hash is not fetched again.

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file that lists a stored directory's files.
pub const MANIFEST: &str = "manifest.json";

/// How to reach an S3-compatible server. Unset fields fall back to the `AWS_*` variables
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ALLOW_HTTP`).
#[derive(Clone, Default)]
pub struct S3Options {
    /// The server's URL, for S3-compatible servers (`http://10.0.0.5:9000`); AWS when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allows an `http://` endpoint (clear text).
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// An object's bytes as they come from the store.
pub type ByteStream = futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>;

/// A file written to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// The store's URL of the file.
    pub uri: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A directory written to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDir {
    /// The store's URL of the directory, ending in `/`.
    pub uri: String,
    /// sha256 of its manifest.
    pub sha256: String,
    /// Bytes of its files, the manifest left out.
    pub size_bytes: u64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct Manifest {
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct FileEntry {
    sha256: String,
    size: u64,
}

/// Files this big or more go up in parts (S3 takes at most 5 GiB in one request).
const MULTIPART_FROM: u64 = 64 << 20;
const PART: usize = 16 << 20;
/// The chunks a `file://` store's object is read in.
const READ_CHUNK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// The store's URL, ending in `/`.
    base: String,
    /// Where keys start inside `store`.
    root: StorePath,
    /// A `file://` store's directory: its objects are files, copied and read as files (see
    /// [`copy_file`]) rather than streamed through `store` in small chunks.
    local: Option<LocalStore>,
}

#[derive(Clone, Debug)]
struct LocalStore {
    files: LocalFileSystem,
    dir: PathBuf,
}

impl ArtifactStore {
    /// Opens the store at `url` (`file://` or `s3://`). A `file://` store's directory is made if
    /// missing.
    pub fn open(url: &str, s3: &S3Options) -> Result<ArtifactStore> {
        let parsed = url::Url::parse(url)
            .with_context(|| format!("the artifact store {url:?} is not a URL"))?;
        let (store, root, local): (Arc<dyn ObjectStore>, StorePath, _) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("{url} names no local directory"))?;
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("making the artifact store {}", dir.display()))?;
                // Written objects are on disk before the log records them.
                let files = LocalFileSystem::new_with_prefix(&dir)
                    .with_context(|| format!("opening the artifact store {}", dir.display()))?
                    .with_fsync(true);
                let dir = dir.canonicalize()?;
                let local = LocalStore {
                    files: files.clone(),
                    dir,
                };
                (Arc::new(files), StorePath::default(), Some(local))
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .with_context(|| format!("{url} names no bucket"))?;
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    // S3-compatible servers name the bucket in the path, not the host name.
                    .with_virtual_hosted_style_request(false);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                if let Some(allow) = s3.allow_http {
                    builder = builder.with_allow_http(allow);
                }
                let store = builder
                    .build()
                    .with_context(|| format!("opening the artifact store {url}"))?;
                let prefix = parsed.path().trim_matches('/');
                (Arc::new(store), StorePath::parse(prefix)?, None)
            }
            other => bail!("artifact stores are file:// or s3:// URLs, not {other}://"),
        };
        Ok(ArtifactStore {
            store,
            base: format!("{}/", url.trim_end_matches('/')),
            root,
            local,
        })
    }

    /// The store's URL, ending in `/`.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn location(&self, key: &str) -> Result<StorePath> {
        let mut path = self.root.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            ensure!(part != "." && part != "..", "{key:?} is not a store key");
            path = path.clone().join(part);
        }
        Ok(path)
    }

    /// The key of `uri` in this store, or an error naming both when it lies elsewhere.
    pub fn key_of<'a>(&self, uri: &'a str) -> Result<&'a str> {
        uri.strip_prefix(&self.base).with_context(|| {
            format!(
                "{uri} is not in this host's artifact store {}; give it the same store",
                self.base
            )
        })
    }

    /// Uploads a directory that [`write_manifest`] described under `key`: each file its manifest
    /// lists, checked against it on the way, then the manifest.
    pub async fn put_dir(&self, key: &str, dir: &Path) -> Result<StoredDir> {
        let key = key.trim_matches('/');
        let bytes = std::fs::read(dir.join(MANIFEST))
            .with_context(|| format!("{} has no {MANIFEST}", dir.display()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)?;
        for (name, entry) in &manifest.files {
            let path = dir.join(name);
            let sent = self
                .upload(&self.location(&format!("{key}/{name}"))?, &path)
                .await
                .with_context(|| format!("uploading {}", path.display()))?;
            ensure!(
                sent == *entry,
                "{} changed while it was uploaded",
                path.display()
            );
        }
        self.store
            .put(
                &self.location(&format!("{key}/{MANIFEST}"))?,
                PutPayload::from(bytes.clone()),
            )
            .await
            .with_context(|| format!("uploading the manifest of {key}"))?;
        Ok(StoredDir {
            uri: format!("{}{key}/", self.base),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size_bytes: manifest.files.values().map(|f| f.size).sum(),
        })
    }

    /// Uploads one file under `key`, which should name its content (a file stored under a key is
    /// never replaced by other bytes, so nothing needs to lock it): `datasets/<sha256>.jsonl`,
    /// say. Returns its URL in the store.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<StoredFile> {
        let key = key.trim_matches('/');
        let sent = self
            .upload(&self.location(key)?, path)
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        Ok(StoredFile {
            uri: format!("{}{key}", self.base),
            sha256: sent.sha256,
            size_bytes: sent.size,
        })
    }

    /// Whether the store holds the object `uri` names, and its size if so.
    pub async fn size_of(&self, uri: &str) -> Result<Option<u64>> {
        let location = self.location(self.key_of(uri)?)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up {uri}")),
        }
    }

    /// The bytes of the object `uri` names, as a stream, and its size; None when the store does
    /// not hold it.
    pub async fn read(&self, uri: &str) -> Result<Option<(u64, ByteStream)>> {
        let location = self.location(self.key_of(uri)?)?;
        if let Some(local) = &self.local {
            let path = local.files.path_to_filesystem(&location)?;
            let file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("reading {uri}")),
            };
            let metadata = file.metadata().await?;
            if !metadata.is_file() {
                return Ok(None);
            }
            // In chunks of a MiB: `object_store`'s 8 KiB each cost a trip to a blocking thread.
            let chunks =
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).map(|read| {
                    read.map_err(|source| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(source),
                    })
                });
            return Ok(Some((metadata.len(), chunks.boxed())));
        }
        match self.store.get(&location).await {
            Ok(found) => Ok(Some((found.meta.size, found.into_stream()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {uri}")),
        }
    }

    /// Puts one file in the store, hashing it on the way: copied as a file into a `file://`
    /// store, streamed up (in parts when large) to any other.
    async fn upload(&self, location: &StorePath, path: &Path) -> Result<FileEntry> {
        use tokio::io::AsyncReadExt;
        if let Some(local) = &self.local {
            let (source, target) = (path.to_owned(), local.files.path_to_filesystem(location)?);
            let dir = local.dir.clone();
            return blocking(move || put_local(&source, &target, &dir)).await;
        }
        let mut file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        let mut hash = Sha256::new();
        if size < MULTIPART_FROM {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await?;
            hash.update(&bytes);
            self.store.put(location, PutPayload::from(bytes)).await?;
        } else {
            let mut upload = WriteMultipart::new_with_chunk_size(
                self.store.put_multipart(location).await?,
                PART,
            );
            let mut buf = vec![0u8; PART];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                upload.wait_for_capacity(4).await?;
                upload.write(&buf[..n]);
            }
            upload.finish().await?;
        }
        Ok(FileEntry {
            sha256: hex::encode(hash.finalize()),
            size,
        })
    }

    /// The directory `uri` names, under `mirror` at its key, checked against the manifest
    /// whose sha256 is `sha256`. A copy already there that matches is used as it is; otherwise
    /// it is fetched into a directory of its own, checked, and moved into place. Fetches of one
    /// key on one host take turns (a lock file beside it), so daemons sharing a mirror neither
    /// fetch twice nor remove a copy another is reading.
    pub async fn fetch_dir(&self, uri: &str, sha256: &str, mirror: &Path) -> Result<PathBuf> {
        let key = self.key_of(uri)?.trim_matches('/');
        ensure!(
            !key.is_empty(),
            "{uri} names the whole store, not a directory in it"
        );
        self.location(key)?; // refuses `..`
        let local = mirror.join(key);
        let parent = local.parent().context("a key has a parent")?.to_owned();
        let _turn = take_turn(&local).await?;
        let (dir, sha) = (local.clone(), sha256.to_owned());
        if blocking(move || Ok(verify_local(&dir, &sha).is_ok())).await? {
            return Ok(local);
        }
        let manifest_bytes = self
            .store
            .get(&self.location(&format!("{key}/{MANIFEST}"))?)
            .await
            .with_context(|| format!("reading the manifest of {uri}"))?
            .bytes()
            .await?;
        let found = hex::encode(Sha256::digest(&manifest_bytes));
        ensure!(
            found == sha256,
            "the manifest of {uri} has sha256 {found}, not the recorded {sha256}"
        );
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .with_context(|| format!("the manifest of {uri} does not decode"))?;
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&parent)
            .with_context(|| format!("making a directory in {}", parent.display()))?;
        for (name, entry) in &manifest.files {
            ensure!(
                !name.contains('/') && name != "." && name != "..",
                "the manifest of {uri} names {name:?}, which is not a file name"
            );
            let found = self
                .download(
                    &self.location(&format!("{key}/{name}"))?,
                    &tmp.path().join(name),
                )
                .await
                .with_context(|| format!("fetching {name} of {uri}"))?;
            ensure!(
                found == *entry,
                "{name} of {uri} has sha256 {} and {} bytes, not the recorded {} and {}",
                found.sha256,
                found.size,
                entry.sha256,
                entry.size
            );
        }
        std::fs::write(tmp.path().join(MANIFEST), &manifest_bytes)?;
        // What is in the way failed its check (under the lock, nobody else uses it).
        let _ = std::fs::remove_dir_all(&local);
        std::fs::rename(tmp.keep(), &local)
            .with_context(|| format!("moving {} into place", local.display()))?;
        tracing::info!(%uri, dir = %local.display(), "fetched from the artifact store");
        Ok(local)
    }

    /// The file `uri` names (one [`put_file`](Self::put_file) stored), under `mirror` at its key,
    /// checked to have `sha256`. A copy already there that matches is used as it is; fetches of
    /// one key on one host take turns, as for directories.
    pub async fn fetch_file(&self, uri: &str, sha256: &str, mirror: &Path) -> Result<PathBuf> {
        let key = self.key_of(uri)?.trim_matches('/');
        let location = self.location(key)?;
        let local = mirror.join(key);
        let parent = local.parent().context("a key has a parent")?.to_owned();
        let _turn = take_turn(&local).await?;
        let path = local.clone();
        if blocking(move || Ok(file_entry(&path).ok()))
            .await?
            .is_some_and(|f| f.sha256 == sha256)
        {
            return Ok(local);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&parent)
            .with_context(|| format!("making a directory in {}", parent.display()))?;
        let fetched = tmp.path().join("file");
        let found = self
            .download(&location, &fetched)
            .await
            .with_context(|| format!("fetching {uri}"))?;
        ensure!(
            found.sha256 == sha256,
            "{uri} has sha256 {}, not the recorded {sha256}",
            found.sha256
        );
        std::fs::rename(&fetched, &local)
            .with_context(|| format!("moving {} into place", local.display()))?;
        tracing::info!(%uri, file = %local.display(), "fetched from the artifact store");
        Ok(local)
    }

    /// Brings one object down into `path` (a new file), hashing it on the way: copied as a
    /// file from a `file://` store, streamed from any other.
    async fn download(&self, location: &StorePath, path: &Path) -> Result<FileEntry> {
        use tokio::io::AsyncWriteExt;
        if let Some(local) = &self.local {
            let (source, target) = (local.files.path_to_filesystem(location)?, path.to_owned());
            return blocking(move || copy_file(&source, &target)).await;
        }
        let mut stream = self.store.get(location).await?.into_stream();
        // The stream's chunks are small (a network read each): written one by one, each would
        // be a trip to a blocking thread.
        let mut file = tokio::fs::File::create(path).await?;
        file.set_max_buf_size(PART);
        let mut file = tokio::io::BufWriter::with_capacity(PART, file);
        let (mut hash, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hash.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.into_inner().sync_all().await?;
        Ok(FileEntry {
            sha256: hex::encode(hash.finalize()),
            size,
        })
    }
}

/// Holds the lock file beside `local` (made with its parent if missing), so that fetches of one
/// key on one host take turns and none removes a copy another is reading.
async fn take_turn(local: &Path) -> Result<std::fs::File> {
    let parent = local.parent().context("a key has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
    let mut name = local.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::fs::File::create(PathBuf::from(name))?;
    blocking(move || Ok(lock.lock().map(|()| lock)?)).await
}

/// Runs blocking work (hashing, locking) off the async threads, so that a daemon's heartbeats
/// go on meanwhile.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// Describes the files of `dir` (not its subdirectories) in its `manifest.json`; returns the
/// manifest's sha256, the directory's hash, and the files' bytes.
pub fn write_manifest(dir: &Path) -> Result<(String, u64)> {
    let mut manifest = Manifest::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            bail!("{} holds a file whose name is not UTF-8", dir.display());
        };
        if name != MANIFEST && entry.file_type()?.is_file() {
            manifest.files.insert(name, file_entry(&entry.path())?);
        }
    }
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    std::fs::write(dir.join(MANIFEST), &bytes)?;
    Ok((
        hex::encode(Sha256::digest(&bytes)),
        manifest.files.values().map(|f| f.size).sum(),
    ))
}

/// The sha256 and size of a file, read in chunks.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let entry = file_entry(path)?;
    Ok((entry.sha256, entry.size))
}

/// Checks a local copy of a stored directory: its manifest has `sha256`, and every file it
/// lists has the recorded hash and size.
pub fn verify_local(dir: &Path, sha256: &str) -> Result<()> {
    let bytes = std::fs::read(dir.join(MANIFEST))?;
    ensure!(
        hex::encode(Sha256::digest(&bytes)) == sha256,
        "{} holds another manifest",
        dir.display()
    );
    let manifest: Manifest = serde_json::from_slice(&bytes)?;
    for (name, entry) in &manifest.files {
        let found = file_entry(&dir.join(name))?;
        ensure!(found == *entry, "{name} in {} differs", dir.display());
    }
    Ok(())
}

/// Puts a copy of `source` at `target` in a `file://` store under `store_dir`, whole or not at
/// all: placed in a fresh directory beside `target`, renamed into place, and every directory
/// from there up to the store's synced, so that the object is on disk before it is recorded.
fn put_local(source: &Path, target: &Path, store_dir: &Path) -> Result<FileEntry> {
    let parent = target
        .parent()
        .context("a store's object has a directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".put-")
        .tempdir_in(parent)
        .with_context(|| format!("making a directory in {}", parent.display()))?;
    let staged = staging.path().join("file");
    let entry = copy_file(source, &staged)?;
    std::fs::rename(&staged, target)
        .with_context(|| format!("moving {} into place", target.display()))?;
    for dir in parent.ancestors().take_while(|d| d.starts_with(store_dir)) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(entry)
}

/// Makes `dest` (a new file) a synced copy of `source` and hashes what it holds. The kernel
/// copies (`copy_file_range`: extents shared, not written again, on file systems that can, such
/// as XFS and btrfs). Never a hard link: a store's object and a mirror's copy stay two files, so
/// one written in place cannot change what the log recorded, and the next fetch repairs it.
fn copy_file(source: &Path, dest: &Path) -> Result<FileEntry> {
    std::fs::copy(source, dest)
        .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
    let entry = file_entry(dest).with_context(|| format!("reading {}", dest.display()))?;
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", dest.display()))?;
    Ok(entry)
}

fn file_entry(path: &Path) -> std::io::Result<FileEntry> {
    let mut file = std::fs::File::open(path)?;
    let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileEntry {
        sha256: hex::encode(hash.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &Path) -> ArtifactStore {
        ArtifactStore::open(&format!("file://{}", dir.display()), &S3Options::default()).unwrap()
    }

    #[tokio::test]
    async fn a_directory_comes_back_whole_on_another_host_and_a_changed_byte_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (shared, writer, reader) = (
            tmp.path().join("shared"),
            tmp.path().join("a"),
            tmp.path().join("b"),
        );
        let src = writer.join("checkpoints/r/step-2");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("model.safetensors"), vec![7u8; 70 << 20]).unwrap();
        std::fs::write(src.join("config.json"), b"{}").unwrap();
        let (sha256, size) = write_manifest(&src).unwrap();
        let store = store_in(&shared);
        let stored = store.put_dir("checkpoints/r/step-2", &src).await.unwrap();
        assert_eq!(
            (stored.sha256.as_str(), stored.size_bytes),
            (sha256.as_str(), size)
        );
        assert_eq!(
            stored.uri,
            format!("file://{}/checkpoints/r/step-2/", shared.display())
        );
        assert_eq!(stored.size_bytes, (70 << 20) + 2);
        // The store holds a file of its own.
        let stored_model = shared.join("checkpoints/r/step-2/model.safetensors");
        assert_ne!(
            file_id(&stored_model),
            file_id(&src.join("model.safetensors"))
        );
        // The writer's own copy is its mirror: nothing to fetch.
        let here = store
            .fetch_dir(&stored.uri, &stored.sha256, &writer)
            .await
            .unwrap();
        assert_eq!(here, src);
        // Another host fetches it.
        let there = store
            .fetch_dir(&stored.uri, &stored.sha256, &reader)
            .await
            .unwrap();
        assert_eq!(there, reader.join("checkpoints/r/step-2"));
        assert_eq!(std::fs::read(there.join("config.json")).unwrap(), b"{}");
        assert_ne!(
            file_id(&there.join("model.safetensors")),
            file_id(&stored_model)
        );
        verify_local(&there, &stored.sha256).unwrap();
        // A copy written in place leaves the store as it was, so the next fetch repairs it.
        std::fs::write(there.join("config.json"), b"[]").unwrap();
        assert!(verify_local(&there, &stored.sha256).is_err());
        let repaired = store
            .fetch_dir(&stored.uri, &stored.sha256, &reader)
            .await
            .unwrap();
        assert_eq!(std::fs::read(repaired.join("config.json")).unwrap(), b"{}");
        // A wrong hash is refused; so is a stored file that changed.
        let wrong = "0".repeat(64);
        let refused = store
            .fetch_dir(&stored.uri, &wrong, &tmp.path().join("c"))
            .await;
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("not the recorded")
        );
        std::fs::write(shared.join("checkpoints/r/step-2/config.json"), b"{ }").unwrap();
        let refused = store
            .fetch_dir(&stored.uri, &stored.sha256, &tmp.path().join("d"))
            .await
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("config.json"),
            "{refused:#}"
        );
    }

    /// The device and inode of `path`: which file it is.
    fn file_id(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.dev(), metadata.ino())
    }

    #[tokio::test]
    async fn a_file_comes_back_on_another_host_checked_by_its_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_in(&tmp.path().join("shared"));
        let src = tmp.path().join("train.jsonl");
        std::fs::write(&src, b"{\"question\": \"1+1?\", \"answer\": 2}\n").unwrap();
        let (sha256, size) = hash_file(&src).unwrap();
        let key = format!("datasets/{sha256}.jsonl");
        let stored = store.put_file(&key, &src).await.unwrap();
        assert_eq!(stored.uri, format!("{}{key}", store.url()));
        assert_eq!(
            (stored.sha256.as_str(), stored.size_bytes),
            (sha256.as_str(), size)
        );
        assert_eq!(store.size_of(&stored.uri).await.unwrap(), Some(size));
        let missing = format!("{}datasets/none.jsonl", store.url());
        assert_eq!(store.size_of(&missing).await.unwrap(), None);
        let (size_read, mut chunks) = store.read(&stored.uri).await.unwrap().unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = chunks.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!((size_read, read), (size, std::fs::read(&src).unwrap()));
        assert!(store.read(&missing).await.unwrap().is_none());
        let directory = format!("{}datasets", store.url());
        assert!(store.read(&directory).await.unwrap().is_none());

        let host = tmp.path().join("b");
        let fetched = store.fetch_file(&stored.uri, &sha256, &host).await.unwrap();
        assert_eq!(fetched, host.join(&key));
        assert_eq!(
            std::fs::read(&fetched).unwrap(),
            std::fs::read(&src).unwrap()
        );
        // A changed local copy is fetched again; a wrong hash is refused, leaving nothing.
        std::fs::write(&fetched, b"changed").unwrap();
        let again = store.fetch_file(&stored.uri, &sha256, &host).await.unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&src).unwrap());
        let other = tmp.path().join("c");
        let refused = store
            .fetch_file(&stored.uri, &"0".repeat(64), &other)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("not the recorded"),
            "{refused}"
        );
        assert!(!other.join(&key).exists());
    }

    #[test]
    fn keys_stay_inside_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store_in(tmp.path());
        assert!(store.location("a/../b").is_err());
        assert!(store.key_of("file:///elsewhere/x/").is_err());
        assert!(ArtifactStore::open("ftp://x/y", &S3Options::default()).is_err());
    }
}
