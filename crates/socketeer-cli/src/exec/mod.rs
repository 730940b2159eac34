//! Running commands remotely, the tutorials' "simple ssh" made safe: `serve exec` (the server)
//! and `exec` (its client), over socketeer's native protocol or the tutorial's size-header
//! exchange.

pub(crate) mod client;
pub(crate) mod policy;
pub(crate) mod process;
pub(crate) mod server;
mod sessions;
mod size_header;
pub(crate) mod wire;
