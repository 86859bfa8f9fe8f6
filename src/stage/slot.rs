//! Where a stage's [`Ports`] wait between its starts: a [`PortSlot`] owned
//! by the run, and the [`PortLease`] a running stage holds, which puts the
//! ports back when it is dropped (also when the stage's actor fails or is
//! killed), so a restarted stage carries on with them.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::ports::Ports;

/// Where a stage's [`Ports`] wait between stage generations.
#[derive(Debug)]
pub(crate) struct PortSlot<T: Send + 'static> {
    ports: Mutex<Option<Ports<T>>>,
    returned: Notify,
}

impl<T: Send + 'static> PortSlot<T> {
    pub(crate) fn new(ports: Ports<T>) -> Arc<Self> {
        Arc::new(PortSlot {
            ports: Mutex::new(Some(ports)),
            returned: Notify::new(),
        })
    }

    /// Takes the ports, waiting until a previous holder has put them back.
    /// A lease begins a start of the stage: the held item, if any, gets
    /// the full retry policy again.
    pub(crate) async fn lease(self: &Arc<Self>) -> PortLease<T> {
        loop {
            let notified = self.returned.notified();
            if let Some(mut ports) = self.take() {
                ports.received.failed_attempts = 0;
                return PortLease {
                    ports,
                    slot: self.clone(),
                };
            }
            notified.await;
        }
    }

    /// Takes the ports out, if no stage holds them.
    pub(crate) fn take(&self) -> Option<Ports<T>> {
        self.ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Changes the ports in place, if no stage holds them (before the
    /// stage's first start).
    pub(crate) fn update(&self, change: impl FnOnce(&mut Ports<T>)) {
        if let Some(ports) = self
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            change(ports);
        }
    }

    fn put_back(&self, ports: Ports<T>) {
        *self.ports.lock().unwrap_or_else(PoisonError::into_inner) = Some(ports);
        self.returned.notify_waiters();
        self.returned.notify_one();
    }
}

/// A stage's hold on its ports; dropping it puts them back into the slot.
#[derive(Debug)]
pub(crate) struct PortLease<T: Send + 'static> {
    ports: Ports<T>,
    slot: Arc<PortSlot<T>>,
}

impl<T: Send + 'static> Deref for PortLease<T> {
    type Target = Ports<T>;
    fn deref(&self) -> &Ports<T> {
        &self.ports
    }
}

impl<T: Send + 'static> DerefMut for PortLease<T> {
    fn deref_mut(&mut self) -> &mut Ports<T> {
        &mut self.ports
    }
}

impl<T: Send + 'static> Drop for PortLease<T> {
    fn drop(&mut self) {
        let ports = std::mem::replace(&mut self.ports, Ports::detached());
        self.slot.put_back(ports);
    }
}
