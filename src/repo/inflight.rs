//! Coalesced fills. The first request for a missing key starts one upstream fetch; every other
//! request for that key joins it. The fetch writes to a spool file (for the filesystem backend,
//! the temp file that becomes the object) and publishes how many bytes are there; each client
//! reads the spool at its own pace, so all of them get bytes as they arrive, memory stays flat,
//! and a client that goes away does not disturb the fetch.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
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
}

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
        FillState::Body(p) => p.written > 0 || p.done,
        _ => true,
    })
    .await
}

/// Waits until the fill has ended: committed, ready or failed.
pub async fn finished(rx: &mut watch::Receiver<FillState>) -> FillState {
    wait_for(rx, |s| match s {
        FillState::Pending => false,
        FillState::Body(p) => p.done,
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
                FillState::Body(p) if !p.done => {
                    FillState::Failed(Error::UpstreamUnreachable("the fetch ended early".into()))
                }
                s => s,
            };
        }
    }
}

/// A stream of the body as the fill writes it, from the start. It ends when the body is
/// complete and errors if the fill fails.
pub fn follow(rx: watch::Receiver<FillState>) -> ByteStream {
    struct Follower {
        rx: watch::Receiver<FillState>,
        offset: u64,
        closed: bool,
    }
    let state = Follower {
        rx,
        offset: 0,
        closed: false,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut f = state?;
        loop {
            let current = f.rx.borrow_and_update().clone();
            match current {
                FillState::Body(p) => {
                    // Until the fill is verified and committed, the last byte of a body of
                    // known length is held back, so a client can never see a complete body
                    // that later fails its checks.
                    let readable = match p.head.content_length {
                        Some(len) if !p.done => p.written.min(len.saturating_sub(1)),
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
            let mut s = follow(rx2);
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
