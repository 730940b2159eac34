//! `socketeer hub`: the telemetry server (SPEC §7). Robots' records are parsed and checked in
//! [`model`], and committed by one writer thread in [`store`] before they are acknowledged.

pub(crate) mod model;
pub(crate) mod store;
