//! Read buffers that waiting connections let go, kept a few per thread for the next connection
//! that has bytes to read: a busy server reuses them instead of allocating one per message, and
//! thousands of idle connections hold none.

use std::cell::RefCell;

use bytes::BytesMut;

use super::LARGE_READ;

/// Buffers kept per thread (at most `KEEP * LARGE_READ` bytes).
const KEEP: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A kept buffer, or an empty one.
pub(super) fn take() -> BytesMut {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps an empty buffer for reuse (or frees it, when enough are kept).
pub(super) fn give(buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > LARGE_READ {
        return;
    }
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}
