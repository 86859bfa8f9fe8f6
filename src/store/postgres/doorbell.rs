//! The inbox doorbell of a shared journal: a writer that accepts input for
//! a run it does not hold `NOTIFY`s the schema's channel with the run's id
//! (at commit); each store that subscribes `LISTEN`s on a connection of its
//! own and passes the ids on. The journal stays the truth: a listener that
//! lost its connection reconnects and sends [`RESYNC`], telling subscribers
//! to look at every run they hold, as a lagging subscriber must too.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_postgres::{AsyncMessage, Config, NoTls};
use uuid::Uuid;

use super::schema::quote_ident;

/// Sent when ids may have been missed: look at every run held.
pub(crate) const RESYNC: Uuid = Uuid::nil();

/// How many ids a slow subscriber may fall behind before it lags (and
/// resyncs).
const CAPACITY: usize = 4096;

/// The doorbell's subscribers and its listener, started on first use.
pub(crate) struct Doorbell {
    config: Config,
    schema: Option<String>,
    channel: String,
    sender: Arc<broadcast::Sender<Uuid>>,
    started: OnceLock<()>,
    /// Rung when the store goes: the listener lets its connection go.
    stop: Arc<Notify>,
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl Doorbell {
    pub(crate) fn new(config: Config, schema: Option<String>, channel: String) -> Doorbell {
        Doorbell {
            config,
            schema,
            channel,
            sender: Arc::new(broadcast::channel(CAPACITY).0),
            started: OnceLock::new(),
            stop: Arc::new(Notify::new()),
        }
    }

    /// A new subscriber; the first one starts the listener (a task on the
    /// current tokio runtime, ending once every handle to the store is gone).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        let receiver = self.sender.subscribe();
        self.started.get_or_init(|| {
            let listener = listen(
                self.config.clone(),
                self.schema.clone(),
                self.channel.clone(),
                Arc::downgrade(&self.sender),
            );
            let stop = self.stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = listener => {}
                    () = stop.notified() => {}
                }
            });
        });
        receiver
    }
}

/// Listens on `channel` until `sender` is gone, reconnecting with a capped
/// backoff; after each (re)connection, a [`RESYNC`].
async fn listen(
    config: Config,
    schema: Option<String>,
    channel: String,
    sender: Weak<broadcast::Sender<Uuid>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if sender.strong_count() == 0 {
            return;
        }
        match listen_once(&config, schema.as_deref(), &channel, &sender).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, ?backoff, "the inbox doorbell's connection failed; again");
                metrics::counter!(crate::metrics::LEASE_FAILURES, "op" => "listen").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection's life: `LISTEN`, a resync, then every notification until
/// the connection ends (`Ok`) or fails to start (`Err`).
async fn listen_once(
    config: &Config,
    schema: Option<&str>,
    channel: &str,
    sender: &Weak<broadcast::Sender<Uuid>>,
) -> Result<(), tokio_postgres::Error> {
    let mut config = config.clone();
    config.application_name("troupe-doorbell");
    let (client, mut connection) = config.connect(NoTls).await?;
    let (notes, mut heard) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the client's requests to go out.
    let pump = tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    let _ = notes.send(note.payload().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
            .await?;
    }
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
        .await?;
    // Whatever was rung while nobody listened.
    if let Some(sender) = sender.upgrade() {
        let _ = sender.send(RESYNC);
    }
    while let Some(payload) = heard.recv().await {
        let Some(sender) = sender.upgrade() else {
            pump.abort();
            return Ok(());
        };
        if let Ok(run_id) = payload.parse::<Uuid>() {
            let _ = sender.send(run_id);
        }
    }
    Ok(())
}
