//! Where records come in: a [`Session`](session::Session) per link (its device, session and
//! line count, records batched for the writer, answers kept in line order) shared by robots'
//! TCP connections ([`tcp`]) and `POST /api/ingest` bodies (in `http`); Influx lines come in
//! through [`crate::influx`].

pub(crate) mod session;
pub(crate) mod tcp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) use crate::metrics::Stats;
use crate::store::Store;
pub use tcp::IngestHandler;

/// The device name of a connection that neither authenticated one nor sent `{"device":..}`.
pub(crate) const UNNAMED: &str = "unnamed";

/// What every ingest link shares.
pub(crate) struct Ingest {
    pub(crate) store: Store,
    pub(crate) stats: Arc<Stats>,
    pub(crate) presence: Arc<Presence>,
    /// The largest image taken, in bytes.
    pub(crate) max_image: usize,
    /// Image bytes being received at once, over all links, in KiB: a link waits for room
    /// before it reads an image, so a thousand uploads cannot take a thousand caps of memory.
    pub(crate) image_room: Arc<tokio::sync::Semaphore>,
    /// Every device's clock offset, from the time exchanges on its links.
    pub(crate) clocks: Arc<crate::clock::Clocks>,
}

impl Ingest {
    /// What all links may receive of images at once: 32 MiB, or two images at the cap.
    pub(crate) fn image_room(max_image: usize) -> Arc<tokio::sync::Semaphore> {
        let kib = (32 * 1024).max(2 * max_image.div_ceil(1024));
        Arc::new(tokio::sync::Semaphore::new(kib))
    }
}

/// Which devices have ingest connections open, and how many.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    open: Mutex<HashMap<String, u32>>,
}

/// Marks a device connected until dropped.
pub(crate) struct Here {
    presence: Arc<Presence>,
    device: String,
}

impl Presence {
    pub(crate) fn enter(self: &Arc<Self>, device: &str) -> Here {
        *self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(device.to_owned())
            .or_default() += 1;
        Here {
            presence: Arc::clone(self),
            device: device.to_owned(),
        }
    }

    /// Connections per connected device.
    pub(crate) fn snapshot(&self) -> HashMap<String, u32> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut open = self.presence.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.device) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.device);
            }
        }
    }
}
