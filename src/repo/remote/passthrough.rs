//! Bodies that storage cannot take: each client of a bypassed fill gets the rest of the body
//! straight from upstream (`Range: bytes=N-`, or the whole body with its first N bytes
//! skipped when upstream ignores ranges), and the operator is warned at most once a minute.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::{Fetch, RemoteRepo, status_error};
use crate::error::{Error, Result};
use crate::repo::inflight::{BypassReason, Resume};
use crate::storage::ByteStream;
use crate::upstream::{Answer, BodyStream, RequestOptions};

/// "Cache bypassed" warnings: one a minute at most for each reason.
static NO_SPACE_WARNING: crate::Throttle =
    crate::Throttle::every(std::time::Duration::from_secs(60));
static TOO_LARGE_WARNING: crate::Throttle =
    crate::Throttle::every(std::time::Duration::from_secs(60));

impl RemoteRepo {
    /// How a client of `fetch`'s fill gets the rest of the body if the fill bypasses storage.
    pub(super) fn resume(self: &Arc<Self>, fetch: &Fetch) -> Resume {
        let this = self.clone();
        let fetch = fetch.clone();
        Arc::new(move |offset| {
            let this = this.clone();
            let fetch = fetch.clone();
            async move {
                this.pass_through(&fetch, offset)
                    .await
                    .map_err(io::Error::other)
            }
            .boxed()
        })
    }

    /// The body of `fetch` from `offset` on, straight from upstream and not stored.
    async fn pass_through(&self, fetch: &Fetch, offset: u64) -> Result<ByteStream> {
        let opts = RequestOptions {
            range_from: Some(offset),
            ..fetch.options(None)
        };
        let answer = self
            .upstream_of(fetch)
            .get(&fetch.upstream_path, &opts)
            .await?;
        let Answer::Body { head, stream } = answer else {
            return Err(status_error(&answer));
        };
        let skip = match head.range_start {
            None => offset,
            Some(start) if start == offset => 0,
            Some(start) => {
                return Err(Error::UpstreamUnreachable(format!(
                    "asked for the body from byte {offset}, upstream sent it from {start}"
                )));
            }
        };
        Ok(skipping(stream, skip))
    }

    /// Counts a bypass and warns about it, at most once a minute.
    pub(super) fn bypassed(&self, key: &str, reason: BypassReason, cause: &Error) {
        self.cache
            .metrics
            .bypass
            .with_label_values(&[self.name.as_str(), reason.as_str()])
            .inc();
        let throttle = match reason {
            BypassReason::NoSpace => &NO_SPACE_WARNING,
            BypassReason::TooLarge => &TOO_LARGE_WARNING,
        };
        if throttle.ready() {
            tracing::warn!(
                repository = %self.name,
                key,
                reason = reason.as_str(),
                error = %crate::error_chain(cause),
                "passing a body through uncached (warned once a minute per reason)"
            );
        }
    }
}

/// Whether `e` is storage refusing a write for lack of space or quota (ENOSPC, EDQUOT).
pub(super) fn is_no_space(e: &Error) -> bool {
    e.is_no_space()
}

/// `body` without its first `skip` bytes, with core errors as I/O errors.
fn skipping(body: BodyStream, skip: u64) -> ByteStream {
    futures::stream::unfold((body, skip), |(mut body, mut skip)| async move {
        loop {
            let chunk: Bytes = match body.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(io::Error::other(e)), (body, 0))),
            };
            if skip >= chunk.len() as u64 {
                skip -= chunk.len() as u64;
                continue;
            }
            let rest = chunk.slice(skip as usize..);
            return Some((Ok(rest), (body, 0)));
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn skipping_drops_exactly_the_first_bytes() {
        let chunks = ["abc", "de", "fgh"].map(|c| Ok(Bytes::from_static(c.as_bytes())));
        for (skip, want) in [
            (0, "abcdefgh"),
            (2, "cdefgh"),
            (3, "defgh"),
            (6, "gh"),
            (8, ""),
        ] {
            let body: BodyStream = futures::stream::iter(chunks.clone()).boxed();
            let got: Vec<u8> = skipping(body, skip)
                .map(|c| c.unwrap().to_vec())
                .concat()
                .await;
            assert_eq!(got, want.as_bytes(), "skip {skip}");
        }
    }
}
