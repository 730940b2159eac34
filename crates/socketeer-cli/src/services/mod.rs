//! The built-in services of `socketeer serve`, each written on the library's public API only.

pub(crate) mod chat;
pub(crate) mod echo;
pub(crate) mod exec;
