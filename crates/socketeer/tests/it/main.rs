//! Integration tests for the socketeer library: real sockets on 127.0.0.1:0 and temp-dir Unix
//! paths; every wait is on an event (a reply, an EOF, a channel message), never a sleep.

#![allow(unreachable_pub)] // test helpers are `pub` within this one test binary

mod auth;
mod codecs;
mod datagram_server;
mod layering;
mod limits;
mod shutdown;
mod stream_server;
mod support;
mod threads;
mod tls;
mod unix;
