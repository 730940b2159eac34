//! File transfer: `serve files` and its clients `put`, `get` and `ls`.

pub(crate) mod client;
pub(crate) mod path;
pub(crate) mod root;
pub(crate) mod server;
pub(crate) mod transfer;
pub(crate) mod wire;
