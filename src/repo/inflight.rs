//! Coalesced fills. The first request for a missing key starts one upstream fetch; every other
//! request for that key joins it. The fetch writes to a spool file (for the filesystem backend,
//! the temp file that becomes the object) and publishes how many bytes are there; each client
//! reads the spool at its own pace, so all of them get bytes as they arrive, memory stays flat,
//! and a client that goes away does not disturb the fetch.
//!
//! When storage cannot take the body (the disk is full), the fill stops and becomes a
//! pass-through: each client reads what the spool holds, then asks upstream for the rest
//! itself, so every client still gets the whole body and nothing partial is kept.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::CacheStatus;
use crate::error::Error;
use crate::storage::{ByteStream, read_cached};
use crate::upstream::Head;

/// Bytes read from the spool per step.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// Progress of a body being fetched.
#[derive(Clone)]
pub struct BodyProgress {
    pub head: Arc<Head>,
    pub spool: Arc<std::fs::File>,
    /// Bytes in the spool so far.
    pub written: u64,
    /// True once the whole body is in and committed.
    pub done: bool,
    /// Set when the fill gave up storing the body: the spool's `written` bytes are good, the
    /// rest comes from upstream through each client's [`Resume`].
    pub bypass: Option<BypassReason>,
}

/// Why a body goes from upstream to clients without being cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Storage refused the write for lack of space or quota.
    NoSpace,
    /// The body is larger than `max_object_size`.
    TooLarge,
}

impl BypassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::NoSpace => "no_space",
            BypassReason::TooLarge => "too_large",
        }
    }
}

/// Asks upstream for the body from an offset on, for a client of a fill that bypasses.
pub type Resume = Arc<dyn Fn(u64) -> BoxFuture<'static, io::Result<ByteStream>> + Send + Sync>;

/// What a fill has reached.
#[derive(Clone)]
pub enum FillState {
    /// Waiting for upstream to answer.
    Pending,
    /// Upstream answered with a body, which is arriving.
    Body(BodyProgress),
    /// Nothing to stream: the cached object is good (revalidated, or filled meanwhile).
    Ready(CacheStatus),
    /// The fill failed; nothing was committed.
    Failed(Error),
    /// Upstream answered with this head, but storage could not take any of the body: every
    /// client gets it from upstream through its [`Resume`].
    Bypass(Arc<Head>, BypassReason),
}

type Map = Arc<Mutex<HashMap<String, watch::Receiver<FillState>>>>;

/// The fills in flight, by storage key.
#[derive(Default, Clone)]
pub struct Inflight {
    map: Map,
}

/// The outcome of [`Inflight::join`].
pub enum Joined {
    /// No fill was running: the caller must run this one.
    Started(FillSender, watch::Receiver<FillState>),
    /// A fill is running; follow it.
    Waiting(watch::Receiver<FillState>),
}

impl Inflight {
    /// Joins the fill of `key`, or registers a new one the caller must drive.
    pub fn join(&self, key: &str) -> Joined {
        let mut map = self.map.lock().expect("inflight lock");
        if let Some(rx) = map.get(key) {
            return Joined::Waiting(rx.clone());
        }
        let (tx, rx) = watch::channel(FillState::Pending);
        map.insert(key.to_string(), rx.clone());
        Joined::Started(
            FillSender {
                tx,
                map: self.map.clone(),
                key: key.to_string(),
                finished: false,
            },
            rx,
        )
    }

    /// Number of fills in flight.
    /// True while a fill of `key` runs in this process.
    pub fn contains(&self, key: &str) -> bool {
        self.map.lock().expect("inflight lock").contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("inflight lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The driving side of a fill. Dropped unfinished (error, panic, cancellation), it reports a
/// failure to every waiter and unregisters the key.
pub struct FillSender {
    tx: watch::Sender<FillState>,
    map: Map,
    key: String,
    finished: bool,
}

impl FillSender {
    /// Upstream answered with a body that will be written to `spool`.
    pub fn body(&self, head: Head, spool: std::fs::File) {
        self.tx.send_replace(FillState::Body(BodyProgress {
            head: Arc::new(head),
            spool: Arc::new(spool),
            written: 0,
            done: false,
            bypass: None,
        }));
    }

    /// `n` more bytes are in the spool.
    pub fn progress(&self, n: u64) {
        self.tx.send_modify(|s| {
            if let FillState::Body(p) = s {
                p.written += n;
            }
        });
    }

    /// The body is complete and committed.
    pub fn complete(mut self) {
        self.unregister();
        self.tx.send_modify(|s| {
            if let FillState::Body(p) = s {
                p.done = true;
            }
        });
    }

    /// Storage could not take the rest of the body: clients read the spool as far as it was
    /// announced, then go to upstream. Without a spool yet, `head` is what upstream answered.
    pub fn bypass(mut self, head: Head, reason: BypassReason) {
        self.unregister();
        self.tx.send_modify(|s| match s {
            FillState::Body(p) => p.bypass = Some(reason),
            other => *other = FillState::Bypass(Arc::new(head), reason),
        });
    }

    /// Ends the fill with a final state.
    pub fn finish(mut self, state: FillState) {
        self.unregister();
        self.tx.send_replace(state);
    }

    fn unregister(&mut self) {
        self.finished = true;
        self.map.lock().expect("inflight lock").remove(&self.key);
    }
}

impl Drop for FillSender {
    fn drop(&mut self) {
        if !self.finished {
            self.unregister();
            self.tx
                .send_replace(FillState::Failed(Error::UpstreamUnreachable(
                    "the fetch was interrupted".into(),
                )));
        }
    }
}

/// Waits until the fill has something to show: the first bytes of a body (so that a fetch
/// failing before any byte arrives is still an error status, not an empty 200), or its end.
pub async fn started(rx: &mut watch::Receiver<FillState>) -> FillState {
    wait_for(rx, |s| match s {
        FillState::Pending => false,
        FillState::Body(p) => p.written > 0 || p.done || p.bypass.is_some(),
        _ => true,
    })
    .await
}

/// Waits until the fill has ended: committed, ready or failed.
pub async fn finished(rx: &mut watch::Receiver<FillState>) -> FillState {
    wait_for(rx, |s| match s {
        FillState::Pending => false,
        FillState::Body(p) => p.done || p.bypass.is_some(),
        _ => true,
    })
    .await
}

async fn wait_for(
    rx: &mut watch::Receiver<FillState>,
    reached: impl Fn(&FillState) -> bool,
) -> FillState {
    loop {
        let state = rx.borrow_and_update().clone();
        if reached(&state) {
            return state;
        }
        if rx.changed().await.is_err() {
            let state = rx.borrow().clone();
            return match state {
                FillState::Pending => FillState::Failed(Error::UpstreamUnreachable(
                    "the fetch ended without an answer".into(),
                )),
                FillState::Body(p) if !p.done && p.bypass.is_none() => {
                    FillState::Failed(Error::UpstreamUnreachable("the fetch ended early".into()))
                }
                s => s,
            };
        }
    }
}

/// A stream of the body as the fill writes it, from the start. It ends when the body is
/// complete and errors if the fill fails. If the fill bypasses storage, the stream goes on
/// with what `resume` gets from upstream after the last byte the spool gave it.
pub fn follow(rx: watch::Receiver<FillState>, resume: Resume) -> ByteStream {
    struct Follower {
        rx: watch::Receiver<FillState>,
        offset: u64,
        closed: bool,
        resume: Resume,
        /// The rest of the body from upstream, once the fill bypassed.
        rest: Option<ByteStream>,
    }
    let state = Follower {
        rx,
        offset: 0,
        closed: false,
        resume,
        rest: None,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut f = state?;
        loop {
            if let Some(rest) = f.rest.as_mut() {
                return match rest.next().await {
                    Some(Ok(chunk)) => Some((Ok(chunk), Some(f))),
                    Some(Err(e)) => Some((Err(e), None)),
                    None => None,
                };
            }
            let current = f.rx.borrow_and_update().clone();
            match current {
                FillState::Body(p) => {
                    // Until the fill is verified and committed, the last byte of a body of
                    // known length is held back, so a client can never see a complete body
                    // that later fails its checks. Bytes before a bypass are upstream's as
                    // they came and were never part of a failed check.
                    let readable = match p.head.content_length {
                        Some(len) if !p.done && p.bypass.is_none() => {
                            p.written.min(len.saturating_sub(1))
                        }
                        _ => p.written,
                    };
                    if f.offset < readable {
                        let n = (readable - f.offset).min(FOLLOW_CHUNK) as usize;
                        let offset = f.offset;
                        // Bytes just written are usually still in the page cache: read them
                        // here; otherwise on the blocking pool.
                        let read = match read_cached(&p.spool, offset, n) {
                            Some(buf) => Ok(buf),
                            None => {
                                let spool = p.spool.clone();
                                tokio::task::spawn_blocking(move || {
                                    let mut buf = vec![0u8; n];
                                    spool.read_exact_at(&mut buf, offset).map(|_| buf)
                                })
                                .await
                                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
                            }
                        };
                        return match read {
                            Ok(buf) => {
                                f.offset += buf.len() as u64;
                                Some((Ok(Bytes::from(buf)), Some(f)))
                            }
                            Err(e) => Some((Err(e), None)),
                        };
                    }
                    if p.done && f.offset >= p.written {
                        return None;
                    }
                    if p.bypass.is_some() {
                        match (f.resume)(f.offset).await {
                            Ok(rest) => f.rest = Some(rest),
                            Err(e) => return Some((Err(e), None)),
                        }
                        continue;
                    }
                }
                FillState::Bypass(..) => {
                    match (f.resume)(f.offset).await {
                        Ok(rest) => f.rest = Some(rest),
                        Err(e) => return Some((Err(e), None)),
                    }
                    continue;
                }
                FillState::Failed(e) => return Some((Err(io::Error::other(e)), None)),
                FillState::Ready(_) | FillState::Pending => {}
            }
            if f.closed {
                return Some((
                    Err(io::Error::other("the upstream fetch ended early")),
                    None,
                ));
            }
            if f.rx.changed().await.is_err() {
                f.closed = true;
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn waiters_follow_the_spool_and_see_completion() {
        let inflight = Inflight::default();
        let Joined::Started(tx, rx) = inflight.join("k") else {
            panic!("first join must start");
        };
        let Joined::Waiting(rx2) = inflight.join("k") else {
            panic!("second join must wait");
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut w = std::fs::File::create(&path).unwrap();
        tx.body(
            Head {
                content_length: Some(6),
                ..Head::default()
            },
            std::fs::File::open(&path).unwrap(),
        );
        let reader = tokio::spawn(async move {
            let mut s = follow(rx2, no_resume());
            let mut out = Vec::new();
            while let Some(c) = s.next().await {
                out.extend_from_slice(&c.unwrap());
            }
            out
        });
        w.write_all(b"abc").unwrap();
        tx.progress(3);
        tokio::task::yield_now().await;
        w.write_all(b"def").unwrap();
        tx.progress(3);
        tx.complete();
        assert_eq!(reader.await.unwrap(), b"abcdef");
        assert!(inflight.is_empty());
        drop(rx);
    }

    fn no_resume() -> Resume {
        Arc::new(|_| Box::pin(async { Err(io::Error::other("no upstream here")) }))
    }

    /// Serves `body` from `offset`, as an upstream answering a range request would.
    fn resume_from(body: &'static [u8]) -> Resume {
        Arc::new(move |offset| {
            Box::pin(async move {
                let rest = Bytes::from_static(&body[offset as usize..]);
                Ok(futures::stream::iter([Ok(rest)]).boxed())
            })
        })
    }

    #[tokio::test]
    async fn a_bypassed_fill_gives_waiters_the_spool_then_the_rest_from_upstream() {
        let inflight = Inflight::default();
        let Joined::Started(tx, rx) = inflight.join("k") else {
            panic!("first join must start");
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut w = std::fs::File::create(&path).unwrap();
        let head = Head {
            content_length: Some(6),
            ..Head::default()
        };
        tx.body(head.clone(), std::fs::File::open(&path).unwrap());
        w.write_all(b"abc").unwrap();
        tx.progress(3);
        // The spool's file is gone (as a writer's aborted temp file is); readers still hold it.
        std::fs::remove_file(&path).unwrap();
        tx.bypass(head, BypassReason::NoSpace);
        let mut s = follow(rx, resume_from(b"abcdef"));
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        assert_eq!(out, b"abcdef");
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn a_fill_bypassed_before_its_body_sends_waiters_to_upstream() {
        let inflight = Inflight::default();
        let Joined::Started(tx, mut rx) = inflight.join("k") else {
            panic!()
        };
        tx.bypass(Head::default(), BypassReason::NoSpace);
        assert!(matches!(started(&mut rx).await, FillState::Bypass(..)));
        let mut s = follow(rx, resume_from(b"whole"));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"whole");
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn dropped_sender_fails_waiters() {
        let inflight = Inflight::default();
        let Joined::Started(tx, mut rx) = inflight.join("k") else {
            panic!()
        };
        drop(tx);
        assert!(matches!(started(&mut rx).await, FillState::Failed(_)));
        assert!(inflight.is_empty());
    }
}
