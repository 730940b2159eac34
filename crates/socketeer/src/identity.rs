//! Who a peer proved to be: the device it authenticated as, and how.

/// Which answer a client gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// 64 hex characters: the Python tutorials' client.
    Tutorial,
    /// Device name, nonce and mutual proof: socketeer's own clients.
    Socketeer,
}

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The device: named by a socketeer-mode client, or found by its key in a per-device file
    /// for a tutorial client. `None` for a tutorial client under a single shared key.
    pub device: Option<String>,
    /// How it authenticated.
    pub mode: AuthMode,
}
