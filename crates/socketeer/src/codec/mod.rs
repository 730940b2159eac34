//! Bounded codecs for the two framings socketeer speaks: newline-terminated lines
//! ([`LineCodec`]) and length-prefixed frames ([`FrameCodec`], a 4-byte big-endian length then
//! the payload). Both implement tokio-util's `Decoder` and `Encoder`, so they also work with
//! `tokio_util::codec::Framed`.
//!
//! Every decoder checks its limit before it keeps a byte more than the limit allows, and
//! neither reserves memory for a frame before the frame's bytes actually arrive: a peer that
//! announces a 16 MiB frame and sends nothing costs four bytes, not sixteen megabytes.

mod frame;
mod line;

pub use frame::FrameCodec;
pub use line::{LineCodec, trim_line_end};
