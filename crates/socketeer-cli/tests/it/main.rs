//! End-to-end tests of the `socketeer` binary: real processes, real sockets on 127.0.0.1:0 and
//! temp-dir Unix paths, and outside peers (python3, nc, socat) where installed.

#![allow(unreachable_pub)] // test helpers are `pub` within this one test binary

mod chat;
mod connect;
mod dashboard;
mod echo;
mod exec;
mod files;
mod fleet;
mod foxglove;
mod hub;
mod hub_attacks;
mod hub_images;
mod interop;
mod listen;
mod modes;
mod recording;
mod relay;
mod resources;
mod scan;
mod security;
mod stderr_gone;
mod support;
mod usage;
