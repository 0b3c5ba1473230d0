//! The S3 backend: objects at `s3://BUCKET/{prefix}{key}`. A write goes to a local spool file
//! (which clients following the fill read) and to S3 at the same time: one PutObject for small
//! objects, a multipart upload in `PART_SIZE` parts for large ones, completed only on commit and
//! aborted on error or drop, so S3 never shows a partial object.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{ByteRange, ObjectEntry, ObjectRead, StorageKey, TEMP_PREFIX};
use crate::config::{ChecksumMode, S3Config};
use crate::error::{Error, Result};

/// Multipart part size; also the largest object sent with one PutObject.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Keys per DeleteObjects call (the S3 maximum).
const DELETE_BATCH: usize = 1000;
/// Tries of one DeleteObjects batch (see `delete_many`).
const DELETE_ATTEMPTS: u32 = 5;
/// Multipart uploads older than this were left by dead processes and are aborted by the sweep.
const STALE_UPLOAD: Duration = Duration::from_secs(3600);

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    spool_dir: PathBuf,
}

/// An SDK failure as a storage error. The SDK's messages name the operation and the service's
/// answer; credentials never appear in them.
fn s3_error<E, R>(context: impl Into<String>) -> impl FnOnce(SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let context = context.into();
    move |e| Error::storage(context)(io::Error::other(DisplayErrorContext(&e).to_string()))
}

impl S3Storage {
    pub async fn open(config: &S3Config) -> Result<S3Storage> {
        let bucket = config
            .bucket
            .as_ref()
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::BadRequest("storage.bucket is required for backend s3".into()))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(30))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = config.region.as_ref().filter(|r| !r.0.is_empty()) {
            loader = loader.region(Region::new(region.0.clone()));
        }
        let id = config.access_key_id.as_ref().filter(|v| !v.0.is_empty());
        let secret = config
            .secret_access_key
            .as_ref()
            .filter(|v| !v.expose().is_empty());
        if let (Some(id), Some(secret)) = (id, secret) {
            loader = loader.credentials_provider(Credentials::new(
                id.0.clone(),
                secret.expose().to_string(),
                None,
                None,
                "artifactapi-config",
            ));
        }
        if let Some(endpoint) = config.endpoint.as_ref().filter(|e| !e.0.is_empty()) {
            loader = loader.endpoint_url(endpoint.0.clone());
        }
        let shared = loader.load().await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.force_path_style);
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if config.request_checksum == ChecksumMode::WhenRequired {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let client = Client::from_conf(builder.build());
        let mut prefix = config
            .prefix
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let spool_dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        tokio::fs::create_dir_all(&spool_dir)
            .await
            .map_err(Error::storage(format!("creating {}", spool_dir.display())))?;
        Ok(S3Storage {
            client,
            bucket,
            prefix,
            spool_dir,
        })
    }

    /// Where writes are spooled before their upload.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    fn full(&self, key: &str) -> Result<String> {
        Ok(format!("{}{}", self.prefix, StorageKey::parse(key)?))
    }

    pub async fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error(format!("HEAD {key}"))(e)),
        }
    }

    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let full = self.full(key)?;
        let served = match range {
            None => None,
            Some(r) => {
                let Some(size) = self.head(key).await? else {
                    return Ok(None);
                };
                let (a, b) = r.resolve(size).ok_or(Error::RangeNotSatisfiable { size })?;
                Some((a, b, size))
            }
        };
        let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some((a, b, _)) = served {
            req = req.range(format!("bytes={a}-{b}"));
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(s3_error(format!("GET {key}"))(e)),
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let body = out.body;
        let stream = futures::stream::unfold(body, |mut body| async move {
            match body.next().await {
                Some(Ok(b)) => Some((Ok(b), body)),
                Some(Err(e)) => Some((Err(io::Error::other(e.to_string())), body)),
                None => None,
            }
        })
        .boxed();
        Ok(Some(match served {
            Some((a, b, size)) => ObjectRead {
                size,
                range: Some((a, b)),
                body: stream,
            },
            None => ObjectRead {
                size: len,
                range: None,
                body: stream,
            },
        }))
    }

    pub async fn writer(&self, key: &str) -> Result<S3Writer> {
        let full = self.full(key)?;
        // A miss while S3 is down fails before any byte is streamed to clients.
        self.check().await?;
        let path = self.spool_dir.join(format!(
            "{TEMP_PREFIX}{}-s3-{}",
            std::process::id(),
            SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let ctx = format!("creating spool file in {}", self.spool_dir.display());
        let spool = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // Unlinked at once: open handles keep it readable, and nothing outlives them.
            std::fs::remove_file(&path)?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::storage("spool")(io::Error::other(e.to_string())))?
        .map_err(Error::storage(ctx))?;
        Ok(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full,
            spool: Arc::new(spool),
            spooled: 0,
            part: BytesMut::new(),
            upload: None,
            finished: false,
        })
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let full = self.full(key)?;
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(s3_error(format!("DELETE {key}")))?;
        Ok(true)
    }

    /// Deletes `keys` with DeleteObjects, 1,000 per call.
    /// Deletes `keys` with DeleteObjects, 1,000 per call. Keys the service could not delete
    /// (a busy or briefly unavailable store answers per key) are tried again, up to
    /// `DELETE_ATTEMPTS` times with a growing pause, before the flush reports an error.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for batch in keys.chunks(DELETE_BATCH) {
            let mut pending = batch
                .iter()
                .map(|k| self.full(k))
                .collect::<Result<Vec<String>>>()?;
            for attempt in 1..=DELETE_ATTEMPTS {
                let mut ids = Vec::with_capacity(pending.len());
                for k in &pending {
                    let id = ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(|e| Error::storage("DeleteObjects")(io::Error::other(e)))?;
                    ids.push(id);
                }
                let delete = Delete::builder()
                    .set_objects(Some(ids))
                    .quiet(true)
                    .build()
                    .map_err(|e| Error::storage("DeleteObjects")(io::Error::other(e)))?;
                let sent = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await;
                let pause = Duration::from_millis(200 * u64::from(attempt));
                let out = match sent {
                    Ok(out) => out,
                    Err(e) if attempt < DELETE_ATTEMPTS => {
                        tracing::debug!(error = %DisplayErrorContext(&e), "DeleteObjects failed; retrying");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    Err(e) => return Err(s3_error("DeleteObjects")(e)),
                };
                let failed: Vec<String> = out
                    .errors()
                    .iter()
                    .filter_map(|e| e.key().map(str::to_string))
                    .collect();
                deleted += (pending.len() - failed.len().min(pending.len())) as u64;
                if failed.is_empty() {
                    break;
                }
                if attempt == DELETE_ATTEMPTS {
                    let first = out.errors()[0].message().unwrap_or("").to_string();
                    return Err(Error::storage("DeleteObjects")(io::Error::other(format!(
                        "{} keys not deleted: {first}",
                        failed.len()
                    ))));
                }
                pending = failed;
                tokio::time::sleep(pause).await;
            }
        }
        Ok(deleted)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>> {
        let full = format!("{}{}", self.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error("listing objects"))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(ObjectEntry {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn list_dir(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<super::DirPage> {
        let full = format!("{}{}", self.prefix, prefix);
        // A directory cursor (`sub/`) resumes after every key below it.
        let start_after = after.map(|a| match a.strip_suffix('/') {
            Some(dir) => format!("{full}{dir}/\u{10FFFF}"),
            None => format!("{full}{a}"),
        });
        let mut all = Vec::new();
        let mut token = None;
        // One level, in pages of S3's own, until one more entry than asked for is known.
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .delimiter("/")
                .set_start_after(start_after.clone())
                .set_continuation_token(token.take())
                .max_keys(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(s3_error("listing a directory"))?;
            for o in out.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&full)) {
                    all.push(super::DirEntry {
                        name: name.to_string(),
                        size: Some(o.size().unwrap_or(0).max(0) as u64),
                    });
                }
            }
            for p in out.common_prefixes() {
                if let Some(name) = p
                    .prefix()
                    .and_then(|k| k.strip_prefix(&full))
                    .and_then(|n| n.strip_suffix('/'))
                {
                    all.push(super::DirEntry {
                        name: name.to_string(),
                        size: None,
                    });
                }
            }
            token = out.next_continuation_token().map(str::to_string);
            if all.len() > limit || token.is_none() {
                break;
            }
        }
        Ok(super::DirPage::of(all, after, limit))
    }

    /// Aborts multipart uploads under our prefix that a dead process left behind.
    pub async fn sweep_temp_files(&self) -> Result<u64> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send()
            .await;
        // Start-up must not depend on S3 being up; the next start sweeps again.
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "could not list multipart uploads to sweep");
                return Ok(0);
            }
        };
        let cutoff = std::time::SystemTime::now() - STALE_UPLOAD;
        let mut aborted = 0;
        for u in out.uploads() {
            let old = u
                .initiated()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                .is_some_and(|t| t < cutoff);
            if let (true, Some(key), Some(id)) = (old, u.key(), u.upload_id()) {
                let r = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
                if r.is_ok() {
                    aborted += 1;
                }
            }
        }
        Ok(aborted)
    }

    pub async fn check(&self) -> Result<()> {
        let call = self.client.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(r) => r.map(|_| ()).map_err(s3_error("HEAD bucket")),
            Err(_) => Err(Error::storage("HEAD bucket")(io::Error::new(
                io::ErrorKind::TimedOut,
                "S3 did not answer in time",
            ))),
        }
    }
}

/// A multipart upload in progress.
struct Upload {
    id: String,
    parts: Vec<CompletedPart>,
}

pub struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    spool: Arc<std::fs::File>,
    spooled: u64,
    /// Bytes not yet sent to S3 (less than a part, except just before a part is sent).
    part: BytesMut,
    upload: Option<Upload>,
    finished: bool,
}

impl S3Writer {
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let spool = self.spool.clone();
        let offset = self.spooled;
        let data = chunk.clone();
        tokio::task::spawn_blocking(move || spool.write_all_at(&data, offset))
            .await
            .map_err(|e| Error::storage("spool")(io::Error::other(e.to_string())))?
            .map_err(Error::storage("writing spool file"))?;
        self.spooled += chunk.len() as u64;
        self.part.extend_from_slice(&chunk);
        if self.part.len() >= PART_SIZE {
            let data = self.part.split_to(PART_SIZE).freeze();
            self.upload_part(data).await?;
        }
        Ok(())
    }

    async fn upload_part(&mut self, data: Bytes) -> Result<()> {
        if self.upload.is_none() {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(s3_error("starting multipart upload"))?;
            let id = out.upload_id().unwrap_or_default().to_string();
            self.upload = Some(Upload {
                id,
                parts: Vec::new(),
            });
        }
        let upload = self.upload.as_mut().expect("upload started");
        let number = upload.parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(s3_error("uploading a part"))?;
        upload.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    pub async fn commit(mut self) -> Result<()> {
        if self.upload.is_none() {
            let data = self.part.split().freeze();
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(S3Body::from(data))
                .send()
                .await
                .map_err(s3_error("PutObject"))?;
            self.finished = true;
            return Ok(());
        }
        if !self.part.is_empty() {
            let data = self.part.split().freeze();
            self.upload_part(data).await?;
        }
        let upload = self.upload.as_ref().expect("upload started");
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(s3_error("completing multipart upload"))?;
        self.finished = true;
        Ok(())
    }

    pub fn spool_reader(&self) -> io::Result<std::fs::File> {
        self.spool.try_clone()
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(upload) = self.upload.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        rt.spawn(async move {
            let r = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(upload.id)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "could not abort multipart upload");
            }
        });
    }
}
