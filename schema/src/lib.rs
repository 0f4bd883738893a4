//! Generated FlatBuffers code for the Vasto wire schema (`schema/vasto.fbs`).
//!
//! The Rust file is produced by `scripts/gen-schema.sh` (Debian's `flatc` 2.0.8, hence the pinned
//! `flatbuffers = "=2.1.2"` runtime whose API that code targets) and checked in, so building
//! needs no `flatc`. Everything else reads these types only through `vasto-wire`, which verifies
//! every buffer before it is accessed.
#![allow(clippy::all, unused_imports, dead_code, non_camel_case_types, missing_docs)]
#![allow(unsafe_op_in_unsafe_fn, mismatched_lifetime_syntaxes)]

#[allow(warnings)]
#[rustfmt::skip]
mod vasto_generated;

pub use flatbuffers;
pub use vasto_generated::vasto::fb;
