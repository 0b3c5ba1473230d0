//! Commit notifications over Redis pub/sub. Every replica publishes the key on the deployment's
//! one channel (`P` `commits`) when it writes a record, remembers a 404 or releases a lease;
//! each process keeps one subscriber connection, opened at its first lease claim, shared by all
//! its waiters and re-made after Redis restarts.
//!
//! One channel per deployment rather than one per key: the connection subscribes once, so a
//! wait costs no SUBSCRIBE round trip and there is no window between subscribing and looking at
//! the record; messages for keys nobody here waits on are a few bytes each and are dropped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use super::coordination::{CommitWatch, Waiters};

/// Time allowed to connect and subscribe, and for a ping to come back.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle subscriber connection is checked (one that died without closing).
const PING_EVERY: Duration = Duration::from_secs(10);
/// First and longest pause between reconnection attempts.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The process's subscriber: the waiters and the task that feeds them.
pub(super) struct CommitSubscriber {
    client: redis::Client,
    channel: String,
    waiters: Arc<Waiters>,
    listener: OnceLock<tokio::task::JoinHandle<()>>,
}

impl CommitSubscriber {
    pub(super) fn new(client: redis::Client, channel: String) -> CommitSubscriber {
        CommitSubscriber {
            client,
            channel,
            waiters: Arc::default(),
            listener: OnceLock::new(),
        }
    }

    /// The deployment's channel, which writers publish keys on.
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// Registers a waiter for `key`, starting the listener on first use.
    pub(super) fn watch(&self, key: &str) -> CommitWatch {
        let watch = self.waiters.register(key);
        self.listener.get_or_init(|| {
            tokio::spawn(listen(
                self.client.clone(),
                self.channel.clone(),
                self.waiters.clone(),
            ))
        });
        watch
    }
}

impl Drop for CommitSubscriber {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

/// Subscribes, relays, and starts over whenever the connection is lost.
async fn listen(client: redis::Client, channel: String, waiters: Arc<Waiters>) {
    let mut pause = RETRY_MIN;
    let mut connected_once = false;
    loop {
        match subscribe(&client, &channel).await {
            Ok((sink, stream)) => {
                if connected_once {
                    tracing::info!("commit notifications resumed");
                }
                connected_once = true;
                pause = RETRY_MIN;
                // Whatever was published while nobody listened is lost: every waiter looks again.
                waiters.wake_all();
                relay(sink, stream, &waiters).await;
                tracing::warn!("commit notifications lost their Redis connection; reconnecting");
            }
            Err(reason) => {
                tracing::debug!(reason, "could not subscribe to commit notifications");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> std::result::Result<(PubSubSink, PubSubStream), String> {
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(OP_TIMEOUT, attempt).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(format!("{:?}", e.kind())),
        Err(_) => Err("Redis did not answer in time".into()),
    }
}

/// Wakes the waiters of each key published, until the connection ends or stops answering.
async fn relay(mut sink: PubSubSink, mut stream: PubSubStream, waiters: &Waiters) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => {
                    if let Ok(key) = msg.get_payload::<String>() {
                        waiters.wake(&key);
                    }
                }
                None => return,
            },
            _ = ping.tick() => {
                let pong = tokio::time::timeout(OP_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
